"""`make bench` (operator part): on the local control plane, with children's statuses simulated.

- kubectl apply -> every child created (one pipeline, operator idle), 5 runs;
- 50 FraudPipelines created at once -> all Ready (statuses simulated as soon as objects exist);
- the operator's RSS with 50 pipelines.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from pathlib import Path

from streamflow_jobs.bench import write_section
from tests.e2e.conftest import KUBECONFIG, ROOT, Kube, Operator, pipeline, wait_for
from tests.e2e.sim import (
    FLINK,
    FP,
    TOPIC,
    children_exist,
    condition,
    simulate_dependencies,
    simulate_flink,
)


def rss_mb(pid: int) -> float:
    """RSS of the operator's Python process (the child of `uv run`)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ")[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            pids.append(int(stat.parent.name))
    best = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                best = max(best, int(line.split()[1]) / 1024)
    return best


def main() -> None:
    import subprocess  # noqa: PLC0415

    from kubernetes import client, config  # noqa: PLC0415

    started = subprocess.run(
        [str(ROOT / "e2e/cluster/up.sh")], check=True, text=True, stderr=subprocess.PIPE
    )
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    config.load_kube_config(str(KUBECONFIG))
    kube = Kube(client.ApiClient())
    resync = os.environ.get("STREAMFLOW_RESYNC_SECONDS", "10")
    op = Operator(KUBECONFIG)
    os.environ["STREAMFLOW_RESYNC_SECONDS"] = resync
    op.start()
    try:
        suffix = uuid.uuid4().hex[:6]
        ns, kafka_ns, airflow_ns = f"bench-{suffix}", f"bench-k-{suffix}", f"bench-a-{suffix}"
        for n in (ns, kafka_ns, airflow_ns):
            kube.namespace(n)
        created = []
        for i in range(5):
            start = time.perf_counter()
            kube.create(pipeline(f"one{i}", ns, kafka_ns, airflow_ns))
            wait_for(
                lambda i=i: children_exist(kube, f"one{i}", ns, kafka_ns), timeout=30, interval=0.05
            )
            created.append(time.perf_counter() - start)

        start = time.perf_counter()
        names = [f"p{i:02d}" for i in range(50)]
        for name in names:
            kube.create(pipeline(name, ns, kafka_ns, airflow_ns))

        def counts() -> tuple[int, int]:  # a few LISTs, not 13 GETs per pipeline
            flinks = [f for f in kube.list(*FLINK, ns) if f["metadata"]["name"][:1] == "p"]
            topics = [t for t in kube.list(*TOPIC, kafka_ns) if f"{ns}-p" in t["metadata"]["name"]]
            return len(flinks), len(topics)

        wait_for(lambda: counts() == (150, 200), timeout=180, interval=0.5)
        all_created = time.perf_counter() - start
        for name in names:
            simulate_dependencies(kube, name, ns, kafka_ns)
        for name in names:
            wait_for(
                lambda name=name: all(
                    (
                        kube.get("flink.apache.org/v1beta1", "FlinkDeployment", f"{name}-{j}", ns)
                        or {}
                    )
                    .get("spec", {})
                    .get("job", {})
                    .get("state")
                    == "running"
                    for j in ("transaction-processor", "fraud-detector", "realtime-aggregator")
                ),
                timeout=120,
            )
            simulate_flink(kube, name, ns)
        for name in names:
            wait_for(
                lambda name=name: (
                    condition(kube.get(*FP, name, ns), "Ready").get("status") == "True"
                ),
                timeout=120,
            )
        all_ready = time.perf_counter() - start
        time.sleep(float(resync) * 2)  # a couple of resync passes over all 55 pipelines
        rss = rss_mb(op.process.pid) if op.process else float("nan")
    finally:
        op.stop()
        if "already running" not in started.stderr:  # leave a cluster we did not start
            subprocess.run([str(ROOT / "e2e/cluster/down.sh")], check=False)
    rows = [
        (
            "kubectl apply -> all 11 children created (median / max of 5)",
            "<= 2 s",
            f"{statistics.median(created):.2f} s / {max(created):.2f} s",
        ),
        ("50 FraudPipelines created at once -> all children created", "", f"{all_created:.1f} s"),
        (
            "50 FraudPipelines -> all Ready (children's statuses simulated)",
            "<= 60 s",
            f"{all_ready:.1f} s",
        ),
        ("operator RSS with 55 pipelines", "<= 150 MB", f"{rss:.0f} MB"),
    ]
    lines = [
        "## Operator",
        "",
        "`make bench` on the local control plane (etcd + kube-apiserver + controller manager "
        f"v1.34.4 on this machine), operator as `kopf run`, resync every {resync} s. "
        "The bench writes children's statuses as Strimzi, the Flink operator and CNPG would.",
        "",
        "| what | target | measured |",
        "| --- | --- | --- |",
        *[f"| {a} | {t} | {m} |" for a, t, m in rows],
        "",
    ]
    write_section("operator", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
