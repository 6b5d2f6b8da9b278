"""The Helm chart: it lints, renders what users expect, the apiserver accepts it, and the
operator's ServiceAccount can do what the operator needs (the whole e2e suite runs with it) and
nothing more."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CHART, OPERATOR_NAMESPACE, apply_manifests, helm, helm_template

pytestmark = pytest.mark.e2e


def render(*args: str) -> list[dict[str, Any]]:
    return helm_template("ops", *args)


def test_chart_lints_clean() -> None:
    done = subprocess.run(
        [helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_defaults_render_a_locked_down_single_operator() -> None:
    docs = {d["kind"]: d for d in render()}
    assert set(docs) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
    }
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two kopf at once
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"][:4] == ["kopf", "run", "-m", "streamflow_operator.handlers"]
    assert "--standalone" in container["command"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    # What `make images` tags (<registry>/operator:<version>; CI pushes to ghcr.io/streamflow).
    assert container["image"] == "ghcr.io/streamflow/operator:0.1.0"
    # Ready on the operator's own view (health.py), alive on kopf's.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    binding = docs["ClusterRoleBinding"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": docs["ServiceAccount"]["metadata"]["name"],
            "namespace": "ops",
        }
    ]
    for rule in docs["ClusterRole"]["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


def test_values_reach_the_manifests() -> None:
    docs = render(
        "--set",
        "image.tag=1.2.3",
        "--set",
        "operator.resyncSeconds=30",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "operator.logLevel=debug",
    )
    kinds = {d["kind"]: d for d in docs}
    assert "ServiceMonitor" in kinds
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(":1.2.3")
    assert {"name": "STREAMFLOW_RESYNC_SECONDS", "value": "30"} in container["env"]
    assert "--verbose" in container["command"]


def test_the_network_policy_admits_only_metrics_and_allows_only_dns_and_the_api() -> None:
    policy = next(d for d in render() if d["kind"] == "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    ports = sorted(p["port"] for rule in policy["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 6443]
    assert not [
        d for d in render("--set", "networkPolicy.enabled=false") if d["kind"] == "NetworkPolicy"
    ]


def test_a_disruption_budget_only_on_request_and_never_blocking_a_drain() -> None:
    assert not [d for d in render() if d["kind"] == "PodDisruptionBudget"]
    (pdb,) = [
        d
        for d in render("--set", "podDisruptionBudget.enabled=true")
        if d["kind"] == "PodDisruptionBudget"
    ]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_a_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    docs = render("--set", f"image.digest={digest}", "--set", "image.pullPolicy=Always")
    (container,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == f"ghcr.io/streamflow/operator@{digest}"
    assert container["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicas=2", "/replicas"),  # two kopf --standalone would fight over every pipeline
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("resources.requests.memory=lots", "/resources/requests/memory"),
        ("operator.workers=0", "/operator/workers"),
        ("operator.logLevel=trace", "/operator/logLevel"),
        ("metrics.port=70000", "/metrics/port"),
        ("image.digest=latest", "/image/digest"),
        ("replica=1", "replica"),  # a misspelt key is refused, not silently ignored
    ],
)
def test_a_bad_value_is_refused_naming_it(setting: str, named: str) -> None:
    for command in (["lint", "--strict", str(CHART)], ["template", "x", str(CHART)]):
        done = subprocess.run(
            [helm(), *command, "--set", setting, "--kube-version", "1.34.4"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode != 0, (command, setting)
        assert named in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_apiserver_accepts_every_manifest(api: Any, operator_kubeconfig: Path) -> None:
    """Server-side dry run: the real apiserver validates each rendered object (in the
    operator's namespace, which the operator_kubeconfig fixture creates)."""
    apply_manifests(api, helm_template(OPERATOR_NAMESPACE), "chart-test", dry_run=True)


ALLOWED = [
    ("patch", "streamflow.dev", "fraudpipelines", ""),
    ("patch", "streamflow.dev", "fraudpipelines", "status"),
    ("watch", "flink.apache.org", "flinkdeployments", ""),
    ("create", "kafka.strimzi.io", "kafkatopics", ""),
    ("delete", "postgresql.cnpg.io", "databases", ""),
    ("get", "", "secrets", ""),
    ("watch", "", "secrets", ""),  # CNPG's app secrets, by label
    ("create", "", "events", ""),
]
DENIED = [
    ("create", "", "pods", ""),
    ("get", "", "nodes", ""),
    ("delete", "", "namespaces", ""),
    ("create", "rbac.authorization.k8s.io", "clusterroles", ""),
    ("update", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("delete", "streamflow.dev", "fraudpipelines", ""),
    ("create", "apps", "deployments", ""),
]


@pytest.mark.parametrize(
    ("verb", "group", "resource", "subresource", "allowed"),
    [(*a, True) for a in ALLOWED] + [(*d, False) for d in DENIED],
)
def test_the_operator_account_is_least_privilege(
    operator_kubeconfig: Path, verb: str, group: str, resource: str, subresource: str, allowed: bool
) -> None:
    from kubernetes import client, config  # noqa: PLC0415

    as_operator = config.new_client_from_config(str(operator_kubeconfig))
    review = client.AuthorizationV1Api(as_operator).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": "any-tenant",
                }
            }
        }
    )
    assert review.status.allowed is allowed, (verb, group, resource, subresource)


def _kind_verbs() -> list[tuple[str, str, str]]:
    from streamflow_operator.children import KINDS  # noqa: PLC0415

    out = []
    for kind in KINDS:
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            out.append((verb, kind.group, kind.plural))
    return out


@pytest.mark.parametrize(("verb", "group", "resource"), _kind_verbs())
def test_the_role_covers_every_child_kind_in_the_registry(
    operator_kubeconfig: Path, verb: str, group: str, resource: str
) -> None:
    """children.KINDS is the one list of kinds: the chart's ClusterRole must follow it."""
    test_the_operator_account_is_least_privilege(
        operator_kubeconfig, verb, group, resource, "", True
    )
