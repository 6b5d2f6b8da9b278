"""Status of a FraudPipeline from an Observation: pure functions, table-tested.

Conditions follow kstatus (Ready / Reconciling / Stalled, so ArgoCD and Flux read health) plus
one per component (KafkaReady, DatabaseReady, MigrationsReady, FlinkReady, AirflowReady,
ModelReady), each naming the child that blocks it. A child counts as ready only once its own
controller has observed its latest generation (kstatus "Current"). The phase is derived from the
conditions, never stored as a second truth. Events are one per transition, from the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from streamflow_operator.children import BY_KIND, COMPONENTS, describe, key_of
from streamflow_operator.render import Manifest, PublishedModel
from streamflow_operator.render.postgres import MONITORING_SUFFIX
from streamflow_operator.spec import FraudPipelineSpec, FraudPipelineStatus

State = Literal["Ready", "Progressing", "Failed", "Conflict", "Terminating"]


@dataclass(frozen=True)
class Health:
    state: State
    message: str
    upgrading: bool = False

    @property
    def ready(self) -> bool:
        return self.state == "Ready"


@dataclass
class ModelInfo:
    """The model: what the source (built-in or the referenced ConfigMap) holds now, and what the
    fraud-detector runs (the last good one while the source is invalid)."""

    deployed: PublishedModel | None
    error: str | None = None  # the source is invalid: kept out, the last good one runs


@dataclass
class Observation:
    """What one pass saw and did: the input of build_status."""

    spec: FraudPipelineSpec | None
    model: ModelInfo
    spec_error: str | None = None
    shadow_model: ModelInfo | None = None  # spec.shadow.model's, when the shadow has one
    children: list[Manifest] = field(default_factory=list)  # live, as after this pass
    conflicts: dict[str, str] = field(default_factory=dict)  # key -> message
    apply_errors: dict[str, str] = field(default_factory=dict)  # transient
    rejected: dict[str, str] = field(default_factory=dict)  # permanent (400/404/422)
    held: dict[str, list[str]] = field(default_factory=dict)  # job -> what it waits for
    repaired: list[str] = field(default_factory=list)  # keys restored after drift
    deleting: list[str] = field(default_factory=list)  # terminating: what is still there
    left_behind: list[str] = field(default_factory=list)  # given up at the deletion bound


def _condition(obj: Manifest, kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def _observed(obj: Manifest) -> int | None:
    """The generation the child's own controller has acted on, when it says."""
    status = obj.get("status") or {}
    if isinstance(status.get("observedGeneration"), int):
        return int(status["observedGeneration"])
    ready = _condition(obj, "Ready")
    if ready and isinstance(ready.get("observedGeneration"), int):
        return int(ready["observedGeneration"])
    return None


def child_health(obj: Manifest) -> Health:
    """Read a child's own status the way its operator writes it."""
    kind, status = obj["kind"], obj.get("status") or {}
    md = obj["metadata"]
    name = f"{kind} {md.get('namespace')}/{md['name']}"
    if md.get("deletionTimestamp"):
        return Health("Terminating", f"{name} is being deleted")
    generation = md.get("generation")
    observed = _observed(obj)
    stale = generation is not None and observed is not None and observed < generation
    pending = f"{name}: generation {generation} not observed yet (at {observed})"
    if kind in ("ConfigMap", "Secret"):
        return Health("Ready", f"{name} applied")
    if kind == "KafkaTopic":
        ready = _condition(obj, "Ready")
        if ready and ready.get("status") == "False" and ready.get("reason"):
            return Health(
                "Progressing", f"{name}: {ready.get('reason')}: {ready.get('message', '')}"
            )
        if stale or observed is None:
            return Health("Progressing", pending if stale else f"{name} waiting for Strimzi")
        if ready and ready.get("status") == "True":
            return Health("Ready", f"{name} ready")
        return Health("Progressing", f"{name} not ready yet (waiting for Strimzi)")
    if kind == "Cluster":
        ready = _condition(obj, "Ready")
        if stale:
            return Health("Progressing", pending)
        if ready and ready.get("status") == "True":
            return Health("Ready", f"{name} ready")
        return Health(
            "Progressing", f"{name} not ready: {status.get('phase', 'waiting for CloudNativePG')}"
        )
    if kind == "Database":
        if stale:
            return Health("Progressing", pending)
        if status.get("applied") is True:
            return Health("Ready", f"{name} applied")
        if status.get("applied") is False:
            return Health("Progressing", f"{name} not applied: {status.get('message', '')}")
        return Health("Progressing", f"{name} not applied yet (waiting for CloudNativePG)")
    if kind == "Job":
        if status.get("succeeded", 0) >= 1:
            return Health("Ready", f"{name} succeeded")
        failed = _condition(obj, "Failed")
        if failed and failed.get("status") == "True":
            return Health("Failed", f"{name} failed: {failed.get('message', '')}")
        return Health("Progressing", f"{name} running (waits for the database)")
    if kind == "FlinkDeployment":
        return _flink_health(obj, name, stale or observed is None, pending)
    return Health("Ready", f"{name} applied")


def _flink_health(obj: Manifest, name: str, stale: bool, pending: str) -> Health:
    status = obj.get("status") or {}
    lifecycle = status.get("lifecycleState")
    job_state = (status.get("jobStatus") or {}).get("state")
    desired = (obj.get("spec") or {}).get("job", {}).get("state")
    if lifecycle == "FAILED":
        return Health("Failed", f"{name} failed: {status.get('error', '')}")
    if lifecycle == "ROLLED_BACK":
        return Health(
            "Failed", f"{name} rolled back to the last stable spec: {status.get('error', '')}"
        )
    if stale:  # kstatus: the Flink operator has not acted on the latest spec yet
        return Health("Progressing", pending, upgrading=lifecycle is not None)
    if desired == "suspended":
        ok = lifecycle == "SUSPENDED"
        return Health("Ready" if ok else "Progressing", f"{name} suspended")
    if lifecycle in ("UPGRADING", "DEPLOYED", "ROLLING_BACK", "CREATED"):
        return Health(
            "Progressing", f"{name} {lifecycle.lower()}", upgrading=lifecycle == "UPGRADING"
        )
    if lifecycle == "STABLE" and job_state == "RUNNING":
        return Health("Ready", f"{name} running")
    return Health("Progressing", f"{name} not running yet (lifecycle {lifecycle}, job {job_state})")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True)
class _Entry:
    key: str
    health: Health


def _entries(obs: Observation) -> dict[str, list[_Entry]]:
    per: dict[str, list[_Entry]] = {c: [] for c in COMPONENTS}

    def add(key: str, health: Health) -> None:
        kind = key.split("/", 1)[0]
        component = BY_KIND[kind].component
        if kind == "ConfigMap" and key.endswith(MONITORING_SUFFIX):
            component = "DatabaseReady"  # the Cluster's custom queries, not a model input
        per[component].append(_Entry(key, health))

    # Sorted: the passes write children concurrently, the status must not depend on who won.
    for obj in sorted(obs.children, key=key_of):
        add(key_of(obj), child_health(obj))
    for key, message in sorted(obs.conflicts.items()):
        add(key, Health("Conflict", message))
    for key, message in sorted(obs.rejected.items()):
        add(key, Health("Failed", f"{describe(key)} rejected: {message}"))
    for key, message in sorted(obs.apply_errors.items()):
        add(key, Health("Progressing", f"{describe(key)} not applied yet: {message}"))
    if obs.model.error:
        per["ModelReady"].append(_Entry("model", Health("Failed", obs.model.error)))
    if obs.shadow_model is not None and obs.shadow_model.error:
        # As for the live model: the last good shadow model keeps running, and this says why.
        message = f"shadow model: {obs.shadow_model.error}"
        per["ModelReady"].append(_Entry("shadow-model", Health("Failed", message)))
    if not any(e.key.startswith("Secret/") for e in per["AirflowReady"]):
        per["AirflowReady"].append(
            _Entry(
                "airflow",
                Health("Progressing", "waiting for CloudNativePG's app secret to build it"),
            )
        )
    if obs.held:
        held = "; ".join(
            f"{job} held suspended until: {', '.join(w[:2])}" for job, w in sorted(obs.held.items())
        )
        per["FlinkReady"].insert(0, _Entry("flink", Health("Progressing", held)))
    return per


def build_status(
    obs: Observation,
    old: dict[str, Any],
    generation: int,
    now: str | None = None,
) -> tuple[dict[str, Any], list[Event]]:
    """(new status, events) where an event is (type, reason, message) for a transition."""
    now = now or _now()
    if obs.spec is None and not obs.deleting:
        return _invalid_status(obs.spec_error or "invalid spec", old, generation, now)
    per = _entries(obs)
    children: list[dict[str, Any]] = [
        {
            "kind": e.key.split("/", 1)[0],
            "namespace": e.key.split("/")[1],
            "name": e.key.split("/", 2)[2],
            "ready": e.health.ready,
            "message": e.health.message,
        }
        for entries in per.values()
        for e in entries
        if e.key.count("/") == 2
    ]
    conditions: list[dict[str, Any]] = []
    stalled: list[tuple[str, str]] = []  # (reason, message)
    waiting: list[str] = []
    upgrading = False
    for component in COMPONENTS:
        entries = per[component]
        blocking = [e.health for e in entries if not e.health.ready]
        broken = [h for h in blocking if h.state in ("Failed", "Conflict")]
        if broken:
            first = broken[0]
            reason = "Conflict" if first.state == "Conflict" else "Failed"
            if component == "ModelReady" and obs.model.error:
                reason = "InvalidModel"
            state, message = "False", first.message
            stalled.append((reason, message))
        elif blocking:
            upgrading = upgrading or any(h.upgrading for h in blocking)
            reason = "Upgrading" if any(h.upgrading for h in blocking) else "Waiting"
            state, message = "False", blocking[0].message
            waiting.append(f"{component}: {message}")
        else:
            reason, state, message = "Ready", "True", f"{len(entries)} ready"
        conditions.append(
            {"type": component, "status": state, "reason": reason, "message": message}
        )
    deleting = bool(obs.deleting)
    ready = not stalled and not waiting and not deleting
    if deleting:
        top = ("Terminating", "waiting for deletion of: " + "; ".join(obs.deleting[:5]))
    elif stalled:
        top = stalled[0]
    elif waiting:
        top = ("Upgrading" if upgrading else "Progressing", waiting[0])
    else:
        top = ("Ready", "all children ready")
    conditions = [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": top[0],
            "message": top[1],
        },
        {
            "type": "Reconciling",
            "status": "True" if (waiting or deleting) and not stalled else "False",
            "reason": top[0] if (waiting or deleting) and not stalled else "Idle",
            "message": top[1] if (waiting or deleting) and not stalled else "",
        },
        {
            "type": "Stalled",
            "status": "True" if stalled else "False",
            "reason": stalled[0][0] if stalled else "Healthy",
            "message": stalled[0][1] if stalled else "",
        },
        *conditions,
    ]
    _stamp(conditions, old, generation, now)
    deployed = obs.model.deployed
    topics = [c for c in children if c["kind"] == "KafkaTopic"]
    flinks = [o for o in obs.children if o["kind"] == "FlinkDeployment"]
    running = sum(
        1
        for o in flinks
        if ((o.get("status") or {}).get("jobStatus") or {}).get("state") == "RUNNING"
    )
    savepoint = next(
        (
            p
            for o in flinks
            if (p := ((o.get("status") or {}).get("jobStatus") or {}).get("upgradeSavepointPath"))
        ),
        old.get("lastSavepoint"),
    )
    phase = (
        "Terminating"
        if deleting
        else "Stalled"
        if stalled
        else ("Suspended" if obs.spec is not None and obs.spec.suspend else "Ready")
        if ready
        else "Upgrading"
        if upgrading
        else "Progressing"
    )
    status = FraudPipelineStatus.model_validate(
        {
            "observedGeneration": generation,
            "phase": phase,
            "conditions": conditions,
            "children": children,
            "topicsReady": f"{sum(1 for c in topics if c['ready'])}/{len(topics)}",
            "jobsRunning": f"{running}/{len(flinks)}",
            "modelVersion": deployed.version if deployed else None,
            "modelChecksum": deployed.checksum if deployed else None,
            **_shadow_versions(obs),
            "lastSavepoint": savepoint,
        }
    )
    new = dump_status(status)
    return new, _events(obs, old, new, per)


def _shadow_versions(obs: Observation) -> dict[str, str | None]:
    """Which challenger runs in shadow (what the fraud-detector is given, not what is asked)."""
    shadow = obs.spec.shadow if obs.spec is not None else None
    if shadow is None:
        return {}
    model = obs.shadow_model.deployed if obs.shadow_model is not None else None
    if shadow.rules is None and model is None:
        return {}  # nothing of its own that is valid: no shadow runs
    return {
        "shadowRulesVersion": (obs.spec.shadow_rules() or obs.spec.rules).content_version,  # type: ignore[union-attr]
        "shadowModelVersion": model.version
        if model is not None
        else (obs.model.deployed.version if obs.model.deployed else None),
    }


def dump_status(status: FraudPipelineStatus) -> dict[str, Any]:
    """The status as written: validated, camelCase, no nulls (a null would be pruned by the
    apiserver and the next comparison would see a change that is none)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def normalized(status: dict[str, Any]) -> dict[str, Any]:
    """A stored status in the same shape as :func:`dump_status` gives, for comparison."""
    try:
        return dump_status(FraudPipelineStatus.model_validate(status))
    except ValueError:
        return dict(status)


def _stamp(
    conditions: list[dict[str, Any]], old: dict[str, Any], generation: int, now: str
) -> None:
    previous = {c.get("type"): c for c in old.get("conditions") or []}
    for c in conditions:
        before = previous.get(c["type"])
        if before is None or before.get("status") != c["status"]:
            c["lastTransitionTime"] = now
        else:
            c["lastTransitionTime"] = before.get("lastTransitionTime", now)
        c["observedGeneration"] = generation


def _invalid_status(
    message: str, old: dict[str, Any], generation: int, now: str
) -> tuple[dict[str, Any], list[Event]]:
    """The spec cannot be used: nothing is applied, the children keep what they run."""
    kept = [c for c in old.get("conditions") or [] if c.get("type") in COMPONENTS]
    conditions = [
        {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message},
        {"type": "Reconciling", "status": "False", "reason": "Idle", "message": ""},
        {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": message},
    ]
    _stamp(conditions, old, generation, now)
    status = FraudPipelineStatus.model_validate(
        {
            **normalized(old),
            "observedGeneration": generation,
            "phase": "Stalled",
            "conditions": conditions + kept,
        }
    )
    new = dump_status(status)
    return new, _events(Observation(spec=None, model=ModelInfo(None)), old, new, {})


def _cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _events(
    obs: Observation, old: dict[str, Any], new: dict[str, Any], per: dict[str, list[_Entry]]
) -> list[Event]:
    """One event per transition: a child turning Conflict or Failed (naming it), a drift
    repaired, the pipeline becoming Stalled, recovering, becoming Ready or leaving Ready."""
    events: list[Event] = []
    before = {
        (c.get("kind"), c.get("namespace"), c.get("name")): c for c in old.get("children") or []
    }
    for entries in per.values():
        for e in entries:
            if e.health.state not in ("Conflict", "Failed") or e.key.count("/") != 2:
                continue
            kind, ns, name = e.key.split("/", 2)
            was = before.get((kind, ns, name))
            if was is None or was.get("ready") or was.get("message") != e.health.message:
                reason = "Conflict" if e.health.state == "Conflict" else "ChildFailed"
                events.append(("Warning", reason, e.health.message))
    for key in sorted(obs.repaired):
        events.append(
            ("Normal", "Repaired", f"{describe(key)} was changed outside the operator: restored")
        )
    for key in obs.left_behind:
        events.append(
            (
                "Warning",
                "LeftBehind",
                f"{describe(key)} was still being deleted when the deletion bound passed",
            )
        )
    old_ready, new_ready = _cond(old, "Ready"), _cond(new, "Ready")
    old_stalled, new_stalled = _cond(old, "Stalled"), _cond(new, "Stalled")
    if new_stalled.get("status") == "True" and (
        old_stalled.get("status") != "True" or old_stalled.get("reason") != new_stalled["reason"]
    ):
        if not events:  # a child's own Warning already said it
            events.append(("Warning", new_stalled["reason"], new_stalled["message"]))
    elif (
        old_stalled.get("status") == "True"
        and new_stalled.get("status") != "True"
        and new_ready.get("status") != "True"  # straight to Ready: the Ready event says it
    ):
        events.append(("Normal", "Recovered", new_ready.get("message", "")))
    if new_ready.get("status") == "True" and old_ready.get("status") != "True":
        events.append(("Normal", "Ready", new_ready.get("message", "")))
    elif (
        old_ready.get("status") == "True"
        and new_ready.get("status") != "True"
        and new_stalled.get("status") != "True"
    ):
        # Leaving Ready for a new spec is a rollout; for the same spec, a degradation.
        rollout = old.get("observedGeneration") != new.get("observedGeneration")
        if rollout or new_ready.get("reason") == "Terminating":
            events.append(("Normal", new_ready.get("reason", "Progressing"), new_ready["message"]))
        else:
            events.append(("Warning", "Degraded", new_ready.get("message", "")))
    return events
