"""The operator image (`make images`), run with podman on the host's network against the
session's control plane, reconciles a FraudPipeline to Ready and finalizes it on deletion
(children's statuses simulated as in the other e2e tests)."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Kube, Operator, free_port, pipeline, wait_for
from tests.e2e.sim import FP, TOPIC, condition, make_ready
from tests.images.containers import image, logs, readable_by, running

pytestmark = pytest.mark.e2e


def container_kubeconfig(operator_kubeconfig: Path, directory: Path) -> Path:
    """The chart's ServiceAccount credentials with the CA inlined: the container sees this one
    file, readable only by the image's user."""
    config = yaml.safe_load(operator_kubeconfig.read_text())
    for entry in config["clusters"]:
        ca = entry["cluster"].pop("certificate-authority", None)
        if ca:
            encoded = base64.b64encode(Path(ca).read_bytes()).decode()
            entry["cluster"]["certificate-authority-data"] = encoded
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return readable_by(path, "operator")


@pytest.fixture
def sole_operator(operator: Operator) -> Iterator[None]:
    """The session's own operator process pauses while the image's runs: two operators would
    reconcile the same pipelines, and the test must see the image's work."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def samples(port: int) -> dict[str, float]:
    """The container's /metrics samples by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("streamflow_")
    }


def test_the_operator_image_reconciles_a_pipeline_to_ready(
    sole_operator: None,
    operator: Operator,
    operator_kubeconfig: Path,
    kube: Kube,
    namespaces: tuple[str, str, str],
    tmp_path: Path,
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    ref = image("operator")
    health, metrics = free_port(), free_port()
    kubeconfig = container_kubeconfig(operator_kubeconfig, tmp_path)
    # The image's own command, with ports that are free on this shared machine.
    command = ["kopf", "run", "-m", "streamflow_operator.handlers", "--all-namespaces",
               "--standalone", f"--liveness=http://127.0.0.1:{health}/healthz"]  # fmt: skip
    options = ["-v", f"{kubeconfig}:/etc/streamflow/kubeconfig:ro",
               "-e", "KUBECONFIG=/etc/streamflow/kubeconfig",
               "-e", f"STREAMFLOW_METRICS_PORT={metrics}"]  # fmt: skip
    with running(ref, command, options) as container:
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1),
            timeout=60,
            what=f"the operator container's liveness; its log:\n{logs(container)[-2000:]}",
        )
        kube.create(pipeline("payments", ns, kafka_ns, airflow_ns))
        fp = make_ready(kube, "payments", ns, kafka_ns)
        assert condition(fp, "Ready")["status"] == "True"
        assert fp["status"]["observedGeneration"] == fp["metadata"]["generation"]
        # The container did that work (the session's operator is stopped): its own metrics
        # count the passes and see the pipeline Ready.
        assert operator.process is not None and operator.process.poll() is not None
        seen = samples(metrics)
        assert seen['streamflow_pipelines{phase="Ready"}'] == 1.0, seen
        assert sum(v for k, v in seen.items() if k.startswith("streamflow_reconciliations_total"))
        # The chart's RBAC is enough: no request of the operator's was denied (other tests'
        # namespaces being deleted refuse new content with "forbidden" too; that is no denial).
        assert 'is forbidden: User "' not in logs(container)
        # Deletion: the image's operator finalizes the pipeline and its cross-namespace topics.
        kube.delete(*FP, "payments", ns)
        wait_for(lambda: kube.get(*FP, "payments", ns) is None, timeout=60, what="finalized")
        wait_for(lambda: not kube.list(*TOPIC, kafka_ns), timeout=60, what="topics deleted")
