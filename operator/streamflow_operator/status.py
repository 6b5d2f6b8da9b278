"""Status of a FraudPipeline from an Observation: pure functions, table-tested.

Conditions follow kstatus (Ready / Reconciling / Stalled, so ArgoCD and Flux read health) plus
one per component (KafkaReady, DatabaseReady, MigrationsReady, FlinkReady, AirflowReady,
ModelReady), each naming the child that blocks it. The phase is derived from the conditions,
never stored as a second truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamflow_operator.reconcile import Observation, child_key
from streamflow_operator.render import Manifest

COMPONENTS = (
    "ModelReady",
    "DatabaseReady",
    "MigrationsReady",
    "KafkaReady",
    "AirflowReady",
    "FlinkReady",
)
_COMPONENT_OF = {
    "KafkaTopic": "KafkaReady",
    "Cluster": "DatabaseReady",
    "Database": "DatabaseReady",
    "Job": "MigrationsReady",
    "FlinkDeployment": "FlinkReady",
    "Secret": "AirflowReady",
    "ConfigMap": "ModelReady",
}


@dataclass(frozen=True)
class Health:
    ready: bool
    message: str
    failed: bool = False  # permanent: retrying will not help (Stalled)
    progressing: str | None = None  # e.g. "UPGRADING"


def _condition(obj: Manifest, kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def child_health(obj: Manifest) -> Health:
    """Read a child's own status the way its operator writes it."""
    kind, status = obj["kind"], obj.get("status") or {}
    name = f"{kind} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
    if kind in ("ConfigMap", "Secret"):
        return Health(True, f"{name} applied")
    if kind == "KafkaTopic":
        ready = _condition(obj, "Ready")
        generation = obj["metadata"].get("generation", 0)
        if (
            ready
            and ready.get("status") == "True"
            and status.get("observedGeneration", 0) >= generation
        ):
            return Health(True, f"{name} ready")
        if ready and ready.get("status") == "False" and ready.get("reason") not in (None, ""):
            return Health(False, f"{name}: {ready.get('reason')}: {ready.get('message', '')}")
        return Health(False, f"{name} not ready yet (waiting for Strimzi)")
    if kind == "Cluster":
        ready = _condition(obj, "Ready")
        if ready and ready.get("status") == "True":
            return Health(True, f"{name} ready")
        return Health(
            False, f"{name} not ready: {status.get('phase', 'waiting for CloudNativePG')}"
        )
    if kind == "Database":
        if status.get("applied") is True:
            return Health(True, f"{name} applied")
        if status.get("applied") is False:
            return Health(False, f"{name} not applied: {status.get('message', '')}")
        return Health(False, f"{name} not applied yet (waiting for CloudNativePG)")
    if kind == "Job":
        if status.get("succeeded", 0) >= 1:
            return Health(True, f"{name} succeeded")
        failed = _condition(obj, "Failed")
        if failed and failed.get("status") == "True":
            return Health(False, f"{name} failed: {failed.get('message', '')}", failed=True)
        return Health(False, f"{name} running (waits for the database)")
    if kind == "FlinkDeployment":
        lifecycle = status.get("lifecycleState")
        job_state = (status.get("jobStatus") or {}).get("state")
        desired = (obj.get("spec") or {}).get("job", {}).get("state")
        if lifecycle == "FAILED":
            return Health(False, f"{name} failed: {status.get('error', '')}", failed=True)
        if lifecycle == "ROLLED_BACK":
            return Health(
                False,
                f"{name} rolled back to the last stable spec: {status.get('error', '')}",
                failed=True,
            )
        if desired == "suspended":
            return Health(lifecycle == "SUSPENDED", f"{name} suspended")
        if lifecycle in ("UPGRADING", "DEPLOYED", "ROLLING_BACK", "CREATED"):
            return Health(False, f"{name} {lifecycle.lower()}", progressing=lifecycle)
        if lifecycle == "STABLE" and job_state == "RUNNING":
            return Health(True, f"{name} running")
        return Health(False, f"{name} not running yet (lifecycle {lifecycle}, job {job_state})")
    return Health(True, f"{name} applied")


def dependencies_ready(
    planned: list[Manifest], current: dict[str, Manifest]
) -> tuple[bool, list[str]]:
    """Database ready -> migrations done -> topics ready: then the Flink jobs may run."""
    waiting = []
    for manifest in planned:
        if manifest["kind"] not in ("Cluster", "Database", "Job", "KafkaTopic"):
            continue
        live = current.get(child_key(manifest))
        if live is None:
            waiting.append(f"{manifest['kind']} {manifest['metadata']['name']} not created yet")
            continue
        health = child_health(live)
        if not health.ready:
            waiting.append(health.message)
    return not waiting, waiting


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_status(
    obs: Observation, old: dict[str, Any], generation: int, now: str | None = None
) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """(new status, events) where an event is (type, reason, message) for a transition."""
    now = now or _now()
    per_component: dict[str, list[tuple[str, Health]]] = {c: [] for c in COMPONENTS}
    children = []
    for obj in obs.children:
        health = child_health(obj)
        component = _COMPONENT_OF.get(obj["kind"], "ModelReady")
        per_component[component].append((child_key(obj), health))
        children.append(
            {
                "kind": obj["kind"],
                "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace", ""),
                "ready": health.ready,
                "message": health.message,
            }
        )
    for key, message in obs.apply_errors.items():
        kind = key.split("/", 1)[0]
        failed = key in obs.permanent_errors
        per_component[_COMPONENT_OF.get(kind, "ModelReady")].append(
            (key, Health(False, f"{key}: {message}", failed=failed))
        )

    conditions: list[dict[str, Any]] = []
    stalled_reasons, not_ready = [], []
    for component in COMPONENTS:
        entries = per_component[component]
        if component == "ModelReady" and obs.model.error:
            entries = [*entries, ("model", Health(False, obs.model.error, failed=True))]
        if component == "AirflowReady" and not any(k.startswith("Secret/") for k, _ in entries):
            entries = [
                *entries,
                (
                    "airflow",
                    Health(False, "waiting for CloudNativePG's app secret to build the connection"),
                ),
            ]
        if component == "FlinkReady" and not obs.dependencies_ready and not obs.spec.suspend:
            entries = [
                *entries,
                (
                    "flink",
                    Health(False, "jobs held suspended until: " + "; ".join(obs.waiting_for[:3])),
                ),
            ]
        blocking = [h for _, h in entries if not h.ready]
        broken = [h for h in blocking if h.failed]
        if broken:
            reason, state, message = "Failed", "False", broken[0].message
            stalled_reasons.append(message)
        elif blocking:
            progressing = next((h.progressing for h in blocking if h.progressing), None)
            reason = "Upgrading" if progressing == "UPGRADING" else "Waiting"
            state, message = "False", blocking[0].message
            not_ready.append(f"{component}: {message}")
        else:
            reason, state, message = "Ready", "True", f"{len(entries)} ready"
        conditions.append(
            {"type": component, "status": state, "reason": reason, "message": message}
        )

    stalled = bool(stalled_reasons)
    ready = not stalled and not not_ready
    conditions = [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "Ready" if ready else ("Stalled" if stalled else "Reconciling"),
            "message": "all children ready" if ready else (stalled_reasons or not_ready)[0],
        },
        {
            "type": "Reconciling",
            "status": "True" if not ready and not stalled else "False",
            "reason": "Progressing" if not ready and not stalled else "Idle",
            "message": not_ready[0] if not_ready and not stalled else "",
        },
        {
            "type": "Stalled",
            "status": "True" if stalled else "False",
            "reason": "Failed" if stalled else "Healthy",
            "message": stalled_reasons[0] if stalled else "",
        },
        *conditions,
    ]
    old_conditions = {c.get("type"): c for c in old.get("conditions") or []}
    events = []
    for c in conditions:
        previous = old_conditions.get(c["type"])
        changed = previous is None or previous.get("status") != c["status"]
        c["lastTransitionTime"] = (
            now if changed or previous is None else previous.get("lastTransitionTime", now)
        )
        c["observedGeneration"] = generation
        if changed and previous is not None:
            kind = (
                "Warning"
                if (c["status"] == "False" and c["type"] != "Reconciling")
                or (c["type"] == "Stalled" and c["status"] == "True")
                else "Normal"
            )
            events.append((kind, f"{c['type']}{c['status']}", c["message"] or c["reason"]))

    topics = [c for c in children if c["kind"] == "KafkaTopic"]
    jobs = [c for c in children if c["kind"] == "FlinkDeployment"]
    running = sum(
        1
        for o in obs.children
        if o["kind"] == "FlinkDeployment"
        and (o.get("status") or {}).get("jobStatus", {}).get("state") == "RUNNING"
    )
    savepoints = [
        ((o.get("status") or {}).get("jobStatus") or {}).get("upgradeSavepointPath")
        for o in obs.children
        if o["kind"] == "FlinkDeployment"
    ]
    upgrading = any(c["reason"] == "Upgrading" for c in conditions)
    phase = (
        "Stalled"
        if stalled
        else "Suspended"
        if obs.spec.suspend and ready
        else "Ready"
        if ready
        else "Upgrading"
        if upgrading
        else "Progressing"
    )
    new_status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": conditions,
        "children": children,
        "topicsReady": f"{sum(c['ready'] for c in topics)}/{len(topics)}",
        "jobsRunning": f"{running}/{len(jobs)}",
        "modelVersion": obs.model.version,
        "modelChecksum": obs.model.checksum,
        "lastSavepoint": next((s for s in savepoints if s), old.get("lastSavepoint")),
    }
    return new_status, events
