"""Status and events from an Observation: pure, table-driven, no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow_operator.reconcile import parse_spec
from streamflow_operator.render import PublishedModel
from streamflow_operator.spec import FraudPipelineStatus
from streamflow_operator.status import (
    ModelInfo,
    Observation,
    build_status,
    child_health,
    normalized,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())
MODEL = PublishedModel("p-model-0123456789", "m1", "sha256:0123456789")


def child(
    kind: str,
    status: dict[str, Any],
    spec: dict[str, Any] | None = None,
    generation: int = 1,
    name: str = "",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": name or kind.lower(), "namespace": "ns", "generation": generation},
        "spec": spec or {},
        "status": status,
    }


READY_TOPIC = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}
RUNNING = {"observedGeneration": 1, "lifecycleState": "STABLE", "jobStatus": {"state": "RUNNING"}}


@pytest.mark.parametrize(
    ("reason", "obj", "state"),
    [
        ("topic ready", child("KafkaTopic", READY_TOPIC), "Ready"),
        (
            "topic: Strimzi has not seen the new spec",
            child("KafkaTopic", READY_TOPIC, generation=2),
            "Progressing",
        ),
        (
            "flink running",
            child("FlinkDeployment", RUNNING, {"job": {"state": "running"}}),
            "Ready",
        ),
        (
            "flink: the Flink operator has not seen the new spec (kstatus)",
            child("FlinkDeployment", RUNNING, {"job": {"state": "running"}}, generation=2),
            "Progressing",
        ),
        (
            "flink without observedGeneration",
            child(
                "FlinkDeployment",
                {"lifecycleState": "STABLE", "jobStatus": {"state": "RUNNING"}},
                {"job": {"state": "running"}},
            ),
            "Progressing",
        ),
        (
            "flink upgrading",
            child(
                "FlinkDeployment",
                {"observedGeneration": 1, "lifecycleState": "UPGRADING"},
                {"job": {"state": "running"}},
            ),
            "Progressing",
        ),
        (
            "flink rolled back",
            child(
                "FlinkDeployment",
                {"observedGeneration": 1, "lifecycleState": "ROLLED_BACK"},
                {"job": {"state": "running"}},
            ),
            "Failed",
        ),
        (
            "job failed",
            child("Job", {"conditions": [{"type": "Failed", "status": "True"}]}),
            "Failed",
        ),
        (
            "database applied",
            child("Database", {"applied": True, "observedGeneration": 1}),
            "Ready",
        ),
        (
            "being deleted",
            {**child("ConfigMap", {}), "metadata": {"name": "x", "deletionTimestamp": "t"}},
            "Terminating",
        ),
    ],
)
def test_child_health(reason: str, obj: dict[str, Any], state: str) -> None:
    assert child_health(obj).state == state, reason


def obs(children: list[dict[str, Any]], **kw: Any) -> Observation:
    model = kw.pop("model", ModelInfo(MODEL))
    return Observation(spec=parse_spec(SAMPLE["spec"]), model=model, children=children, **kw)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def all_ready() -> list[dict[str, Any]]:
    running = {"job": {"state": "running"}}
    return [
        child("ConfigMap", {}),
        child("Secret", {}),
        child("Cluster", {"conditions": [{"type": "Ready", "status": "True"}]}),
        child("Database", {"applied": True, "observedGeneration": 1}),
        child("Job", {"succeeded": 1}),
        child("KafkaTopic", READY_TOPIC),
        child("FlinkDeployment", RUNNING, running),
    ]


def test_the_written_status_is_the_typed_status_and_has_no_nulls() -> None:
    status, _ = build_status(obs(all_ready()), {}, 3, now="t1")
    FraudPipelineStatus.model_validate(status)
    assert "lastSavepoint" not in status  # a null would be pruned: the next pass would differ
    assert normalized(status) == status
    assert status["phase"] == "Ready" and condition(status, "Ready")["status"] == "True"


def test_an_unchanged_pass_writes_nothing_and_says_nothing() -> None:
    first, events = build_status(obs(all_ready()), {}, 3, now="t1")
    assert events == [("Normal", "Ready", "all children ready")]
    second, events = build_status(obs(all_ready()), first, 3, now="t2")
    assert second == first and events == []
    assert condition(second, "Ready")["lastTransitionTime"] == "t1"


def test_one_event_per_transition() -> None:
    ready, _ = build_status(obs(all_ready()), {}, 3)
    failed = child(
        "FlinkDeployment",
        {"observedGeneration": 1, "lifecycleState": "FAILED", "error": "boom"},
        {"job": {"state": "running"}},
    )
    stalled, events = build_status(obs([*all_ready()[:-1], failed]), ready, 3)
    assert stalled["phase"] == "Stalled"
    assert events == [("Warning", "ChildFailed", "FlinkDeployment ns/flinkdeployment failed: boom")]
    _, events = build_status(obs(all_ready()), stalled, 3)
    assert [e[:2] for e in events] == [("Normal", "Ready")]


def test_leaving_ready_for_a_new_spec_is_normal_and_for_the_same_spec_a_warning() -> None:
    ready, _ = build_status(obs(all_ready()), {}, 3)
    stale = child("FlinkDeployment", RUNNING, {"job": {"state": "running"}}, generation=2)
    rollout, events = build_status(obs([*all_ready()[:-1], stale]), ready, 4)
    assert condition(rollout, "Ready")["status"] == "False"
    assert condition(rollout, "Reconciling")["status"] == "True"
    assert [e[0] for e in events] == ["Normal"]
    down = child(
        "KafkaTopic",
        {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "X"}],
        },
    )
    _, events = build_status(obs([*all_ready()[:-2], down, all_ready()[-1]]), ready, 3)
    assert [e[:2] for e in events] == [("Warning", "Degraded")]


def test_held_jobs_say_why_in_flink_ready() -> None:
    status, _ = build_status(
        obs(all_ready(), held={"fraud-detector": ["Database ns/x not applied"]}), {}, 1
    )
    assert condition(status, "FlinkReady")["message"] == (
        "fraud-detector held suspended until: Database ns/x not applied"
    )


def test_a_conflict_stalls_names_the_object_and_warns_once() -> None:
    message = "KafkaTopic kafka/x already exists and is not this pipeline's"
    first, events = build_status(obs(all_ready(), conflicts={"KafkaTopic/kafka/x": message}), {}, 1)
    assert condition(first, "Stalled")["status"] == "True"
    assert condition(first, "KafkaReady")["reason"] == "Conflict"
    assert events == [("Warning", "Conflict", message)]
    again, events = build_status(
        obs(all_ready(), conflicts={"KafkaTopic/kafka/x": message}), first, 1
    )
    assert again == first and events == []


def test_an_invalid_model_is_reported_while_the_last_good_one_runs() -> None:
    model = ModelInfo(MODEL, error="ConfigMap ns/m: checksum mismatch")
    status, events = build_status(obs(all_ready(), model=model), {}, 1)
    assert condition(status, "ModelReady")["reason"] == "InvalidModel"
    assert status["modelVersion"] == "m1"
    assert events == [("Warning", "InvalidModel", "ConfigMap ns/m: checksum mismatch")]


def test_an_invalid_spec_keeps_the_rest_of_the_status_and_warns() -> None:
    ready, _ = build_status(obs(all_ready()), {}, 1)
    invalid, events = build_status(
        Observation(spec=None, model=ModelInfo(None), spec_error="spec.rules: bad"), ready, 2
    )
    assert invalid["observedGeneration"] == 2 and invalid["phase"] == "Stalled"
    assert condition(invalid, "Stalled")["reason"] == "InvalidSpec"
    assert invalid["children"] == ready["children"]
    assert [e[:2] for e in events] == [("Warning", "InvalidSpec")]


def test_a_deletion_says_what_it_waits_for() -> None:
    status, _ = build_status(
        obs([], deleting=["KafkaTopic kafka/x (finalizers: example.com/hold)"]), {}, 1
    )
    assert status["phase"] == "Terminating"
    assert "example.com/hold" in condition(status, "Ready")["message"]


def test_the_shadow_versions_that_run_are_in_the_status() -> None:
    challenger = PublishedModel("payments-model-fedcba9876", "m2", "sha256:fedcba98")
    status, _ = build_status(obs(all_ready(), shadow_model=ModelInfo(challenger)), {}, 1)
    spec = parse_spec(SAMPLE["spec"])
    assert status["shadowRulesVersion"] == spec.shadow_rules().content_version  # type: ignore[union-attr]
    assert status["shadowModelVersion"] == "m2"
    assert status["modelVersion"] == "m1"
    no_shadow = Observation(
        spec=parse_spec({**SAMPLE["spec"], "shadow": None}), model=ModelInfo(MODEL),
        children=all_ready(),
    )  # fmt: skip
    status, _ = build_status(no_shadow, {}, 1)
    assert "shadowRulesVersion" not in status and "shadowModelVersion" not in status


def test_an_invalid_shadow_model_is_reported_and_the_last_good_one_runs() -> None:
    previous = PublishedModel("payments-model-fedcba9876", "m2", "sha256:fedcba98")
    broken = ModelInfo(previous, error="ConfigMap fraud/cand: checksum mismatch")
    status, events = build_status(obs(all_ready(), shadow_model=broken), {}, 1)
    ready = condition(status, "ModelReady")
    assert ready["status"] == "False" and "shadow model: ConfigMap fraud/cand" in ready["message"]
    assert status["shadowModelVersion"] == "m2" and status["modelVersion"] == "m1"
    assert any("shadow model" in e[2] for e in events)


def test_a_late_echo_of_an_older_pipeline_version_never_turns_the_cache_back() -> None:
    """The watch can deliver the echo of an older status write after a newer one was cached;
    taking it made the next pass post a second Ready event (seen in CI)."""
    from streamflow_operator.reconcile import Reconciler  # noqa: PLC0415

    reconciler = Reconciler(kube=None, deletion_timeout=60)  # type: ignore[arg-type]

    def version(rv: str, phase: str, uid: str = "u1") -> dict[str, Any]:
        return {
            "metadata": {"namespace": "ns", "name": "p", "uid": uid, "resourceVersion": rv,
                         "generation": 1},
            "spec": {},
            "status": {"phase": phase},
        }  # fmt: skip

    reconciler.pipeline_changed(version("101", "Ready"))
    reconciler.pipeline_changed(version("100", "Progressing"))  # the late echo
    assert reconciler.pipelines[("ns", "p")]["status"]["phase"] == "Ready"
    reconciler.pipeline_changed(version("102", "Degraded"))  # newer: taken
    assert reconciler.pipelines[("ns", "p")]["status"]["phase"] == "Degraded"
    # The same name recreated (another uid) is another object: taken whatever its version.
    reconciler.pipeline_changed(version("7", "Progressing", uid="u2"))
    assert reconciler.pipelines[("ns", "p")]["metadata"]["uid"] == "u2"
