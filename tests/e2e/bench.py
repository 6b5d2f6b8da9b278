"""`make bench` (operator part): on the local control plane, children's statuses simulated.

The operator runs as in the e2e suite: `kopf run` with the chart's ServiceAccount, whose requests
the apiserver's audit log records (e2e/cluster/up.sh), so "requests" counts everything the
operator sends, kopf's watches included.

- one pipeline: kubectl create -> every child created (5 runs);
- N pipelines created at once (default 500) -> all children created;
- child status change -> the pipeline's status (a watch on the pipelines; 60 changes);
- N pipelines idle: requests/s, CPU (share of one core) and RSS of the operator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from streamflow_jobs.bench import write_section
from tests.e2e.conftest import (
    CLUSTER_DIR,
    KUBECONFIG,
    ROOT,
    Kube,
    Operator,
    operator_credentials,
    pipeline,
    wait_for,
)
from tests.e2e.sim import FLINK, TOPIC, children_exist, now

AUDIT_LOG = CLUSTER_DIR / "logs" / "audit.log"


def _proc_pids(pid: int) -> list[int]:
    """``pid`` and its children (the Python process under `uv run`)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ")[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            pids.append(int(stat.parent.name))
    return pids


def rss_mb(pid: int) -> float:
    best = 0.0
    for p in _proc_pids(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                best = max(best, int(line.split()[1]) / 1024)
    return best


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the operator's processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _proc_pids(pid):
        fields = Path(f"/proc/{p}/stat").read_text().split(") ")[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_cpu_seconds() -> float:
    """CPU time used by the whole machine (all processes, all cores) so far."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(f) for i, f in enumerate(fields) if i not in (3, 4))  # not idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def cluster_pids() -> dict[str, int]:
    return {
        name: int((CLUSTER_DIR / f"{name}.pid").read_text())
        for name in ("kube-apiserver", "etcd", "kube-controller-manager")
        if (CLUSTER_DIR / f"{name}.pid").exists()
    }


def audited_requests() -> int:
    """Requests of the operator's ServiceAccount so far (distinct audit ids)."""
    ids = set()
    for path in (AUDIT_LOG.with_name("audit.log"),):
        if path.exists():
            with path.open() as f:
                for line in f:
                    ids.add(json.loads(line)["auditID"])
    return len(ids)


def count(kube: Kube, kind: tuple[str, str], namespace: str) -> int:
    return len(kube.list(*kind, namespace))


class StatusWatch:
    """Watches the pipelines of a namespace; records when a child's message first shows in a
    pipeline's status."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client, watch  # noqa: PLC0415

        self.seen: dict[str, float] = {}
        self._stop = watch.Watch()
        custom = client.CustomObjectsApi(api)

        def run() -> None:
            with contextlib.suppress(Exception):  # the stream ends when stopped
                self._run(custom, namespace)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def _run(self, custom: Any, namespace: str) -> None:
        for event in self._stop.stream(
            custom.list_namespaced_custom_object,
            "streamflow.dev",
            "v1alpha1",
            namespace,
            "fraudpipelines",
            timeout_seconds=3600,
        ):
            at = time.perf_counter()
            for c in (event["object"].get("status") or {}).get("children") or []:
                self.seen.setdefault(c.get("message", ""), at)

    def stop(self) -> None:
        self._stop.stop()


def main() -> None:
    from kubernetes import client, config  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m tests.e2e.bench")
    parser.add_argument("--pipelines", type=int, default=500)
    parser.add_argument("--idle-seconds", type=float, default=330.0)  # one resync round in
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()

    subprocess.run([str(ROOT / "e2e/cluster/down.sh")], check=False, capture_output=True)
    subprocess.run([str(ROOT / "e2e/cluster/up.sh")], check=True, capture_output=True)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    config.load_kube_config(str(KUBECONFIG))
    api = client.ApiClient()
    kube = Kube(api)
    resync = os.environ.get("STREAMFLOW_RESYNC_SECONDS", "300")
    op = Operator(operator_credentials(KUBECONFIG, api), resync_seconds=float(resync))
    rows: list[tuple[str, str, str]] = []
    cpu_note = ""
    try:
        op.start()
        suffix = uuid.uuid4().hex[:6]
        ns, kafka_ns, airflow_ns = f"bench-{suffix}", f"bench-k-{suffix}", f"bench-a-{suffix}"
        for n in (ns, kafka_ns, airflow_ns):
            kube.namespace(n)
        one = []
        for i in range(5):
            start = time.perf_counter()
            kube.create(pipeline(f"one{i}", ns, kafka_ns, airflow_ns))
            wait_for(
                lambda i=i: children_exist(kube, f"one{i}", ns, kafka_ns), timeout=30, interval=0.05
            )
            one.append(time.perf_counter() - start)
        rows.append(
            (
                "kubectl create -> all 13 children created (median / max of 5)",
                "<= 2 s",
                f"{statistics.median(one):.2f} s / {max(one):.2f} s",
            )
        )

        n = args.pipelines
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        procs = {**cluster_pids(), "operator": op.process.pid if op.process else 0}
        cpu_before = {k: cpu_seconds(pid) for k, pid in procs.items()}
        machine_before = machine_cpu_seconds()
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:  # as fast as a client (ArgoCD, kubectl) sends them
            list(
                pool.map(
                    lambda i: kube.create(pipeline(f"p{i:03d}", ns, kafka_ns, airflow_ns)), range(n)
                )
            )
        submitted = time.perf_counter() - start
        want = (3 * (n + 5), 5 * (n + 5))
        wait_for(
            lambda: (count(kube, FLINK, ns), count(kube, TOPIC, kafka_ns)) == want,
            timeout=600,
            interval=0.5,
            what=f"{n} pipelines' children",
        )
        created = time.perf_counter() - start
        used = {k: cpu_seconds(pid) - cpu_before[k] for k, pid in procs.items()}
        machine = machine_cpu_seconds() - machine_before
        cpu_note = (
            f"CPU used while the {n} pipelines' children were created ({created:.0f} s, "
            f"{2 * created:.0f} core-seconds on 2 cores): "
            + ", ".join(f"{k} {v:.0f} s" for k, v in used.items())
            + f", the whole machine {machine:.0f} s (other sessions' builds and tests included)."
        )
        rows.append(
            (
                f"{n} FraudPipelines created at once -> all children created "
                f"(the {n} creates took {submitted:.1f} s)",
                "<= 60 s",
                f"{created:.1f} s",
            )
        )
        wait_for(op.idle, timeout=600, interval=0.5, what="the operator at rest")

        # Child status change -> pipeline status, through the watches.
        watch = StatusWatch(api, ns)
        time.sleep(1)  # the watch's initial listing
        latencies = []
        for i in range(args.samples):
            name = f"p{(i * 7) % n:03d}"
            message = f"bench change {i}"
            start = time.perf_counter()
            kube.patch_status(
                *TOPIC,
                f"{ns}-{name}-alerts",
                kafka_ns,
                {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "False",
                            "reason": "Bench",
                            "message": message,
                            "lastTransitionTime": now(),
                        }
                    ]
                },
            )
            seen = wait_for(
                lambda m=message: next(
                    (t for text, t in list(watch.seen.items()) if m in text), None
                ),
                timeout=30,
                interval=0.01,
            )
            latencies.append(seen - start)
        watch.stop()
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        rows.append(
            (
                f"child status change -> pipeline status, median / p99 ({len(latencies)} changes, "
                f"{n + 5} pipelines)",
                "<= 1 s / <= 2 s",
                f"{statistics.median(latencies):.3f} s / {p99:.3f} s",
            )
        )

        wait_for(op.idle, timeout=600, interval=0.5, what="the operator at rest")
        assert op.process is not None
        requests0, cpu0, t0 = audited_requests(), cpu_seconds(op.process.pid), time.monotonic()
        time.sleep(args.idle_seconds)  # the measurement window itself
        requests1, cpu1, t1 = audited_requests(), cpu_seconds(op.process.pid), time.monotonic()
        window = t1 - t0
        rows += [
            (
                f"{n + 5} idle pipelines: requests/s from the operator "
                f"({requests1 - requests0} in {window:.0f} s, apiserver audit log)",
                "< 1",
                f"{(requests1 - requests0) / window:.3f}",
            ),
            (
                f"{n + 5} idle pipelines: CPU, share of one core",
                "< 2 %",
                f"{100 * (cpu1 - cpu0) / window:.2f} %",
            ),
            (
                f"{n + 5} idle pipelines: operator RSS",
                "<= 200 MB",
                f"{rss_mb(op.process.pid):.0f} MB",
            ),
        ]
    finally:
        op.stop()
        subprocess.run([str(ROOT / "e2e/cluster/down.sh")], check=False, capture_output=True)
    lines = [
        "## Operator",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        "(`uv run python -m tests.e2e.bench`) on the local control plane (etcd + kube-apiserver "
        "+ controller manager v1.34.4, this 2-core machine, shared with other builds), the "
        f"operator as `kopf run` with the chart's ServiceAccount, resync {resync} s (a safety "
        "net). The bench writes children's statuses as Strimzi, the Flink operator and CNPG "
        "would.",
        "",
        "| what | target | measured |",
        "| --- | --- | --- |",
        *[f"| {a} | {t} | {m} |" for a, t, m in rows],
        "",
        cpu_note,
        "",
    ]
    write_section("operator", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
