"""An apiserver outage: the operator recovers within seconds, quietly, and counts the failures.

Runs after the other e2e modules (file order): it stops the session's kube-apiserver for ~20 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import CLUSTER_DIR, OUTAGES, Kube, Operator, pipeline, wait_for
from tests.e2e.sim import FP, TOPIC, children_exist, condition, make_ready, now

pytestmark = pytest.mark.e2e
OUTAGE_SECONDS = 20


def _apiserver_ready(kube: Kube, kafka_ns: str) -> bool:
    """Serving again, custom resources included (right after start it answers 503 for the
    paths it has not installed yet)."""
    kube.list(*TOPIC, kafka_ns)
    return True


def restart_apiserver_after(seconds: float) -> None:
    """Stop the kube-apiserver, keep it down for ``seconds``, start it again with the same
    command line (etcd keeps the data)."""
    pidfile = CLUSTER_DIR / "kube-apiserver.pid"
    pid = int(pidfile.read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(seconds)  # the outage itself
    log = (CLUSTER_DIR / "logs" / "kube-apiserver.log").open("ab")
    process = subprocess.Popen(
        [a.decode() for a in argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    pidfile.write_text(str(process.pid))


def test_an_apiserver_outage_is_over_within_seconds(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("outage", ns, kafka_ns, airflow_ns))
    make_ready(kube, "outage", ns, kafka_ns)
    # A second pipeline keeps the operator busy through the outage: its deletion waits for a
    # topic held by another finalizer and is passed over every few seconds.
    kube.create(pipeline("busy", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "busy", ns, kafka_ns), what="children")
    held = f"{ns}-busy-alerts"
    kube.patch(*TOPIC, held, kafka_ns, {"metadata": {"finalizers": ["example.com/hold"]}})
    kube.delete(*FP, "busy", ns)
    wait_for(
        lambda: held in condition(kube.get(*FP, "busy", ns), "Ready").get("message", ""),
        what="the deletion waiting",
    )
    unreachable = operator.samples("streamflow_api_errors_total").get(
        'streamflow_api_errors_total{reason="unreachable"}', 0.0
    )
    watch_errors = operator.samples("streamflow_api_errors_total").get(
        'streamflow_api_errors_total{reason="watch"}', 0.0
    )
    log_start = operator.log.stat().st_size

    wait_for(lambda: operator.readiness() == (200, "ok"), timeout=30, what="ready before")
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def watch_readiness() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):
                seen.append(operator.readiness())

    watcher = threading.Thread(target=watch_readiness, daemon=True)
    watcher.start()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    restart_apiserver_after(OUTAGE_SECONDS)
    wait_for(lambda: _apiserver_ready(kube, kafka_ns), timeout=60, what="apiserver back")
    OUTAGES.append((started, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 15))))
    # A change made right after the outage reaches the pipeline's status within seconds.
    kube.patch_status(
        *TOPIC,
        f"{ns}-outage-alerts",
        kafka_ns,
        {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "KafkaError",
                    "message": "after the outage",
                    "lastTransitionTime": now(),
                }
            ]
        },
    )
    wait_for(
        lambda: (
            "after the outage"
            in condition(kube.get(*FP, "outage", ns), "KafkaReady").get("message", "")
        ),
        timeout=10,
        what="the change in status within seconds",
    )
    # Readiness said so while the apiserver was away, and is back once the watches are.
    wait_for(lambda: operator.readiness()[0] == 200, timeout=60, what="ready again")
    stop.set()
    watcher.join()
    unready = [reason for status, reason in seen if status == 503]
    assert any("watch failed" in r or "apiserver unreachable" in r for r in unready), seen
    with operator.log.open("rb") as log:
        log.seek(log_start)
        lines = log.read().decode(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith("Traceback")], "\n".join(lines[-40:])
    # The operator's own failed requests are counted, and said once per outage, not per attempt.
    counted = operator.samples("streamflow_api_errors_total").get(
        'streamflow_api_errors_total{reason="unreachable"}', 0.0
    )
    assert counted > unreachable
    assert len([line for line in lines if "apiserver unreachable" in line]) == 1, lines[-20:]
    assert len([line for line in lines if "reachable again" in line]) == 1, lines[-20:]
    # kopf's watches: one line per failed attempt, each counted.
    failed = [line for line in lines if "Request attempt" in line and "failed" in line]
    counted = operator.samples("streamflow_api_errors_total").get(
        'streamflow_api_errors_total{reason="watch"}', 0.0
    )
    assert counted - watch_errors == len(failed), failed[:5]
    kube.patch(*TOPIC, held, kafka_ns, {"metadata": {"finalizers": None}})
