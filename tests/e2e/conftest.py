"""The operator against a real control plane (etcd + kube-apiserver + controller manager).

One cluster and one `kopf run` operator process serve the whole session; each test works in its
own namespaces. Children's statuses are written by the tests, standing in for Strimzi, the Flink
operator and CloudNativePG (none of which runs here).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = ROOT / ".cluster"
KUBECONFIG = CLUSTER_DIR / "kubeconfig"
SAMPLE = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())
T = TypeVar("T")
# Windows ("YYYY-MM-DD HH:MM:SS" local time, as the operator logs) in which the apiserver was
# restarted on purpose (tests/e2e/test_outage.py).
OUTAGES: list[tuple[str, str]] = []


def kubectl() -> str:
    """kubectl from the machine, else the one e2e/cluster/up.sh built (the cluster fixture ran
    it)."""
    import shutil  # noqa: PLC0415

    cache = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache/streamflow"))
    return shutil.which("kubectl") or str(cache / "path" / "kubectl")


def wait_for(
    check: Callable[[], T | None], timeout: float = 20.0, what: str = "", interval: float = 0.2
) -> T:
    """Poll ``check`` until it returns something truthy (like `kubectl wait`), or fail."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Path]:
    started = subprocess.run(
        [str(ROOT / "e2e/cluster/up.sh")], check=False, capture_output=True, text=True
    )
    if started.returncode != 0:
        pytest.fail(f"control plane did not start:\n{started.stderr[-3000:]}")
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    yield KUBECONFIG
    if "already running" not in started.stderr:
        subprocess.run([str(ROOT / "e2e/cluster/down.sh")], check=False, capture_output=True)


@pytest.fixture(scope="session")
def api(cluster: Path) -> Any:
    from kubernetes import client, config  # noqa: PLC0415

    config.load_kube_config(str(cluster))
    return client.ApiClient()


def free_port() -> int:
    """A free port on 127.0.0.1 (other checkouts may run their own operator on this machine)."""
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    def __init__(self, kubeconfig: Path, resync_seconds: float = 3600) -> None:
        self.kubeconfig = kubeconfig
        self.resync_seconds = resync_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.log = CLUSTER_DIR / "logs" / "operator.log"
        self.metrics_port = free_port()
        self.health_port = free_port()

    def samples(self, name: str) -> dict[str, float]:
        """A metric's samples on the operator's /metrics, by their labels."""
        import urllib.request  # noqa: PLC0415

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        }

    def readiness(self) -> tuple[int, str]:
        """The operator's /readyz: (HTTP status, reason)."""
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode().strip()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode().strip()

    def metric(self, name: str) -> float:
        """The sum of a metric's samples."""
        return sum(self.samples(name).values())

    def idle(self) -> bool:
        """Nothing queued, no pass running."""
        return (
            self.metric("streamflow_queue_depth") == 0
            and self.metric("streamflow_passes_in_progress") == 0
        )

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # The resync is only a safety net: every test must pass without it (children's
            # watches enqueue their pipeline), so by default it never fires during the suite.
            "STREAMFLOW_RESYNC_SECONDS": str(self.resync_seconds),
            # Short, so that the bound on a stuck deletion is tested in seconds.
            "STREAMFLOW_DELETION_TIMEOUT_SECONDS": "20",
            "STREAMFLOW_METRICS_PORT": str(self.metrics_port),
        }
        self.process = subprocess.Popen(
            [
                "uv",
                "run",
                "--no-sync",
                "kopf",
                "run",
                "-m",
                "streamflow_operator.handlers",
                "--all-namespaces",
                "--standalone",
                f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import urllib.request  # noqa: PLC0415

        wait_for(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
            ),
            timeout=60,
            what="operator liveness",
        )
        wait_for(lambda: self.readiness()[0] == 200, timeout=60, what="operator readiness")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


CHART = ROOT / "chart" / "streamflow-operator"
OPERATOR_NAMESPACE = "streamflow-system"


VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "config/versions.env").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)


@functools.cache
def helm() -> str:
    """The pinned helm, built once from its Go module (e2e/cluster/build.sh); checked once per
    session."""
    subprocess.run([str(ROOT / "e2e/cluster/build.sh"), "helm"], check=True, capture_output=True)
    cache = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache/streamflow"))
    return str(cache / "bin" / f"helm-{VERSIONS['HELM_VERSION']}")


def helm_template(namespace: str, *args: str) -> list[dict[str, Any]]:
    """The chart rendered by the pinned helm for this control plane's Kubernetes version."""
    out = subprocess.run(
        [
            helm(),
            "template",
            "streamflow",
            str(CHART),
            "--kube-version",
            VERSIONS["KUBERNETES_VERSION"],
            "--namespace",
            namespace,
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def apply_manifests(
    api: Any, docs: list[dict[str, Any]], manager: str, dry_run: bool = False
) -> None:
    """Server-side apply each manifest (with ``dry_run``, only validated by the apiserver)."""
    from kubernetes import dynamic  # noqa: PLC0415

    resources = dynamic.DynamicClient(api).resources
    for doc in docs:
        resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
            body=doc,
            name=doc["metadata"]["name"],
            namespace=doc["metadata"].get("namespace"),
            field_manager=manager,
            force_conflicts=True,
            **({"dry_run": "All"} if dry_run else {}),
        )


def operator_credentials(cluster: Path, api: Any) -> Path:
    """Credentials of the chart's ServiceAccount: the e2e operator runs with exactly the RBAC
    that `helm install` grants, so a missing permission fails the suite."""
    from kubernetes import client  # noqa: PLC0415

    rendered = helm_template(
        OPERATOR_NAMESPACE,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    )
    core = client.CoreV1Api(api)
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
    # Applied, not created: a running cluster gets the chart's current rules.
    apply_manifests(api, rendered, "e2e-chart")
    (sa,) = [d for d in rendered if d["kind"] == "ServiceAccount"]
    token = core.create_namespaced_service_account_token(
        sa["metadata"]["name"],
        OPERATOR_NAMESPACE,
        {"spec": {"expirationSeconds": 4 * 3600}},
    ).status.token
    admin = yaml.safe_load(cluster.read_text())
    path = CLUSTER_DIR / "operator.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "operator",
                        "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"},
                    }
                ],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Path, api: Any) -> Path:
    return operator_credentials(cluster, api)


@pytest.fixture(scope="session")
def operator(operator_kubeconfig: Path) -> Iterator[Operator]:
    op = Operator(operator_kubeconfig)
    op.log.parent.mkdir(parents=True, exist_ok=True)
    offset = op.log.stat().st_size if op.log.exists() else 0
    op.start()
    yield op
    op.stop()

    # The chart's RBAC must cover everything the operator does: any denial fails the session
    # (except right after an apiserver restart of test_outage: RBAC is not loaded yet then).
    def in_outage(line: bytes) -> bool:
        stamp = line[1:20].decode(errors="replace")
        return any(start <= stamp <= end for start, end in OUTAGES)

    with op.log.open("rb") as log:
        log.seek(offset)
        denied = [
            line.decode(errors="replace")[:300]
            for line in log
            if b'is forbidden: User "system:serviceaccount:' in line and not in_outage(line)
        ]
    if denied:
        pytest.fail(
            f"the operator's ServiceAccount was denied {len(denied)}x:\n" + "\n".join(denied[:5])
        )


class Kube:
    """Small helpers over the dynamic client, for tests."""

    def __init__(self, api: Any) -> None:
        from kubernetes.dynamic import DynamicClient  # noqa: PLC0415

        self.dyn = DynamicClient(api)

    def res(self, api_version: str, kind: str) -> Any:
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError  # noqa: PLC0415

        try:
            return dict(self.res(api_version, kind).get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.res(api_version, kind).get(namespace=namespace).items]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"].get("namespace")
        return dict(
            self.res(body["apiVersion"], body["kind"]).create(body=body, namespace=ns).to_dict()
        )

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        self.res(api_version, kind).status.patch(
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
        )

    def patch(
        self, api_version: str, kind: str, name: str, namespace: str, body: dict[str, Any]
    ) -> None:
        self.res(api_version, kind).patch(
            body=body, name=name, namespace=namespace, content_type="application/merge-patch+json"
        )

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self.res(api_version, kind).delete(name=name, namespace=namespace)

    def events(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """Core v1 Events about the object ``name`` in ``namespace``, oldest first."""
        items = (
            self.res("v1", "Event")
            .get(namespace=namespace, field_selector=f"involvedObject.name={name}")
            .items
        )
        return sorted((dict(i.to_dict()) for i in items), key=lambda e: e["metadata"]["name"])

    def namespace(self, name: str) -> None:
        from kubernetes.dynamic.exceptions import ConflictError  # noqa: PLC0415

        with contextlib.suppress(ConflictError):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@pytest.fixture(scope="session")
def kube(api: Any) -> Kube:
    return Kube(api)


def pipeline(
    name: str, namespace: str, kafka_ns: str, airflow_ns: str, **spec_changes: Any
) -> dict[str, Any]:
    """The sample FraudPipeline, moved to the test's namespaces, using the built-in model and
    no shadow (a test that wants one passes ``shadow=``)."""
    body = copy.deepcopy(SAMPLE)
    body["metadata"] = {"name": name, "namespace": namespace}
    spec = body["spec"]
    spec["kafka"]["namespace"] = kafka_ns
    spec["airflow"]["namespace"] = airflow_ns
    spec["postgres"]["clusterName"] = f"{name}-pg"
    spec["model"] = {}
    spec.pop("shadow", None)
    spec.update(spec_changes)
    return body


@pytest.fixture
def namespaces(kube: Kube) -> Iterator[tuple[str, str, str]]:
    """Fresh namespaces per test, deleted afterwards (the operator finalizes the pipelines),
    so one test's pipelines do not load the operator during the next."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"fp-{suffix}", f"kafka-{suffix}", f"airflow-{suffix}")
    for n in names:
        kube.namespace(n)
    yield names
    for n in names:
        with contextlib.suppress(Exception):
            kube.res("v1", "Namespace").delete(name=n)
