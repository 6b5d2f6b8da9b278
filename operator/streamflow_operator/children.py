"""The one registry of child kinds, and what makes a child ours.

Everything that needs the list of kinds reads it here: the watches (handlers.py), planning and
pruning (plan.py), health and conditions (status.py), REST paths (kube.py); the chart's RBAC is
checked against it (tests/e2e/test_chart.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from streamflow_operator.render import (
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    LABEL_PIPELINE_UID,
    MANAGED_BY,
    PART_OF,
    Manifest,
)
from streamflow_operator.spec import ConditionType

FIELD_MANAGER = "streamflow-operator"
WATCH_SELECTOR = f"{LABEL_PART_OF}={PART_OF}"


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    component: str  # the condition its health feeds
    # Watched (a kopf stream with WATCH_SELECTOR) or, for Secrets, listed once per resync
    # round: kopf has one stream per kind, and the Secret stream carries CNPG's app secrets.
    watched: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{self.plural}" + (f"/{name}" if name else "")


KINDS: tuple[ChildKind, ...] = (
    ChildKind("v1", "ConfigMap", "configmaps", "ModelReady"),
    ChildKind("postgresql.cnpg.io/v1", "Cluster", "clusters", "DatabaseReady"),
    ChildKind("postgresql.cnpg.io/v1", "Database", "databases", "DatabaseReady"),
    ChildKind("batch/v1", "Job", "jobs", "MigrationsReady"),
    ChildKind("kafka.strimzi.io/v1", "KafkaTopic", "kafkatopics", "KafkaReady"),
    ChildKind("v1", "Secret", "secrets", "AirflowReady", watched=False),
    ChildKind("flink.apache.org/v1beta1", "FlinkDeployment", "flinkdeployments", "FlinkReady"),
)
BY_KIND = {k.kind: k for k in KINDS}
# The per-component conditions, in the order the status lists them (spec.ConditionType).
COMPONENTS = tuple(c for c in get_args(ConditionType) if c.endswith("Ready") and c != "Ready")


def key_of(obj: Manifest) -> str:
    md = obj["metadata"]
    return f"{obj['kind']}/{md.get('namespace', '')}/{md['name']}"


def describe(key: str) -> str:
    """``Kind/ns/name`` -> ``Kind ns/name``, the way people write it."""
    kind, _, rest = key.partition("/")
    return f"{kind} {rest}"


def is_ours(obj: Manifest, pipeline_uid: str, pipeline_namespace: str) -> bool:
    """Proven ours: our labels with this pipeline's uid and, in the pipeline's namespace, a
    controller ownerReference to it. A label alone could be copied; a uid cannot be guessed
    before the pipeline exists, so an object made by someone else never matches."""
    md = obj.get("metadata") or {}
    labels = md.get("labels") or {}
    if not pipeline_uid or labels.get(LABEL_PIPELINE_UID) != pipeline_uid:
        return False
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return False
    if md.get("namespace") == pipeline_namespace:
        return any(
            ref.get("uid") == pipeline_uid and ref.get("controller")
            for ref in md.get("ownerReferences") or []
        )
    return True


def foreign_message(key: str, obj: Manifest | None) -> str:
    """Why a child's name is taken, for a condition and an Event."""
    who = ""
    if obj is not None:
        managers = sorted(
            {m.get("manager", "?") for m in obj.get("metadata", {}).get("managedFields") or []}
        )
        if managers:
            who = f" (written by {', '.join(managers)})"
    return (
        f"{describe(key)} already exists and is not this pipeline's{who}: it is left untouched; "
        "delete or rename it, or change the pipeline"
    )


# Labels and annotations the operator sets (and so compares); others' are not kept in memory.
_OUR_PREFIXES = ("app.kubernetes.io/", "streamflow.dev/", "strimzi.io/", "airflow.apache.org/")
# Of a child's status, what status.py reads.
_STATUS_KEYS = {
    "KafkaTopic": ("conditions", "observedGeneration"),
    "Cluster": ("conditions", "phase"),
    "Database": ("applied", "message", "observedGeneration"),
    "Job": ("succeeded", "conditions"),
    "FlinkDeployment": ("lifecycleState", "jobStatus", "error", "observedGeneration"),
}


def slim(obj: dict[str, Any]) -> Manifest:
    """What the operator keeps of a watched child: identity, ownership, the labels and
    annotations it sets, the spec fields and status it reads. Payloads (a model is ~100 KB),
    managedFields and the spec copies in a FlinkDeployment's status are dropped (memory)."""
    md = obj.get("metadata") or {}
    kept_md: dict[str, Any] = {
        k: md[k]
        for k in (
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",  # a published model's: since when it is live (metrics.py)
            "deletionTimestamp",
        )
        if k in md
    }
    for key in ("labels", "annotations"):
        mine = {k: v for k, v in (md.get(key) or {}).items() if k.startswith(_OUR_PREFIXES)}
        if mine:
            kept_md[key] = mine
    if md.get("ownerReferences"):
        kept_md["ownerReferences"] = [
            {"uid": r.get("uid"), "controller": r.get("controller", False)}
            for r in md["ownerReferences"]
        ]
    if md.get("finalizers"):
        kept_md["finalizers"] = md["finalizers"]
    kind = obj.get("kind")
    out: Manifest = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": kept_md}
    if kind == "FlinkDeployment":
        spec = obj.get("spec") or {}
        out["spec"] = {"job": {"state": (spec.get("job") or {}).get("state")}}
        out["mounts"] = sorted(mounted_config_maps(obj))  # now or for a rollback
        out["mountsNow"] = sorted(mounted_config_maps({"spec": spec}))
        # Which ConfigMap each volume mounts now: the live model and the shadow's are told apart.
        template = (spec.get("podTemplate") or {}).get("spec") or {}
        out["mountsByVolume"] = {
            str(v.get("name")): str(v["configMap"]["name"])
            for v in template.get("volumes") or []
            if isinstance(v, dict) and (v.get("configMap") or {}).get("name")
        }
    status = obj.get("status")
    if isinstance(status, dict) and kind in _STATUS_KEYS:
        out["status"] = {k: status[k] for k in _STATUS_KEYS[kind] if k in status}
    # Fields a POST (create) gave our manager as an Update: upgraded to Apply before our next
    # apply, or server-side apply could never remove them (see reconcile.py).
    out["updateManaged"] = any(
        m.get("manager") == FIELD_MANAGER
        and m.get("operation") == "Update"
        and not m.get("subresource")
        for m in md.get("managedFields") or []
    )
    return out


def mounted_config_maps(fd: dict[str, Any]) -> set[str]:
    """ConfigMaps a FlinkDeployment mounts now or may mount again: its spec, and the last
    reconciled and last stable specs the Flink operator keeps for a rollback."""
    import orjson  # noqa: PLC0415

    specs = [fd.get("spec") or {}]
    rs = (fd.get("status") or {}).get("reconciliationStatus") or {}
    for key in ("lastReconciledSpec", "lastStableSpec"):
        if isinstance(rs.get(key), str):
            try:
                specs.append(orjson.loads(rs[key]).get("spec") or orjson.loads(rs[key]))
            except (orjson.JSONDecodeError, AttributeError):
                continue
    names = set()
    for spec in specs:
        template = (spec.get("podTemplate") or {}).get("spec") or {}
        for volume in template.get("volumes") or []:
            name = (volume.get("configMap") or {}).get("name")
            if name:
                names.add(str(name))
    return names
