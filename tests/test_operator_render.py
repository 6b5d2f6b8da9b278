"""The operator's pure parts: CRD generation, rendering, status. No cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow_operator.crd import CHART_CRD_PATH, CRD_PATH, build_crd, crd_yaml
from streamflow_operator.reconcile import ModelInfo, Observation, parse_spec, render_offline
from streamflow_operator.render import Meta, render_all
from streamflow_operator.render.model import MAX_MODEL_BYTES
from streamflow_operator.spec import FraudPipelineSpec
from streamflow_operator.status import build_status, child_health

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == crd_yaml(), "run `streamflow crd` and commit crds/"
    assert CHART_CRD_PATH.read_text() == crd_yaml(), "run `streamflow crd` and commit the chart"


def test_crd_schema_is_structural() -> None:
    text = yaml.safe_dump(build_crd())
    for forbidden in ("$ref", "$defs", "additionalProperties: false", "const:", "type: 'null'"):
        assert forbidden not in text


def test_sample_sets_every_spec_field() -> None:
    """config/samples/fraudpipeline.yaml is the complete reference: no field left unset."""

    def unset(model: Any, data: dict[str, Any], path: str) -> list[str]:
        missing = []
        for name, info in type(model).model_fields.items():
            key = info.alias or name
            if key not in data:
                missing.append(f"{path}{key}")
                continue
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                missing += unset(value, data[key], f"{path}{key}.")
        return missing

    spec = FraudPipelineSpec.model_validate(SAMPLE["spec"])
    assert unset(spec, SAMPLE["spec"], "spec.") == []


def test_render_gives_every_child_in_apply_order() -> None:
    spec = parse_spec(SAMPLE["spec"])
    meta = Meta(
        "payments",
        "fraud",
        uid="u-1",
        app_secret_uri="postgresql://x",
        model_json=b"{}",
        model_version="m1",
    )
    kinds = [c["kind"] for c in render_all(spec, meta)]
    assert kinds == [
        "ConfigMap",
        "Cluster",
        "Database",
        "Job",
        "KafkaTopic",
        "KafkaTopic",
        "KafkaTopic",
        "KafkaTopic",
        "Secret",
        "FlinkDeployment",
        "FlinkDeployment",
        "FlinkDeployment",
    ]  # the model ConfigMap is the user's (configMapName)


@pytest.mark.parametrize(
    ("ready", "suspend", "state"),
    [(False, False, "suspended"), (True, False, "running"), (True, True, "suspended")],
)
def test_jobs_run_only_when_dependencies_are_ready(ready: bool, suspend: bool, state: str) -> None:
    spec = parse_spec({**SAMPLE["spec"], "suspend": suspend})
    children = render_all(spec, Meta("p", "ns", dependencies_ready=ready))
    assert {c["spec"]["job"]["state"] for c in children if c["kind"] == "FlinkDeployment"} == {
        state
    }


def test_rules_change_changes_the_flink_spec_and_nothing_else_does() -> None:
    def flink(spec_dict: dict[str, Any]) -> list[Any]:
        children = render_all(parse_spec(spec_dict), Meta("p", "ns"))
        return [c["spec"] for c in children if c["kind"] == "FlinkDeployment"]

    base = flink(SAMPLE["spec"])
    assert flink(SAMPLE["spec"]) == base  # deterministic: no spurious upgrades
    changed = {**SAMPLE["spec"], "rules": {**SAMPLE["spec"]["rules"], "alertThreshold": 0.8}}
    assert flink(changed) != base


def test_names_never_collide_across_namespaces() -> None:
    spec = parse_spec(SAMPLE["spec"])
    a = {
        (c["kind"], c["metadata"]["namespace"], c["metadata"]["name"])
        for c in render_all(spec, Meta("payments", "team-a"))
    }
    b = {
        (c["kind"], c["metadata"]["namespace"], c["metadata"]["name"])
        for c in render_all(spec, Meta("payments", "team-b"))
    }
    assert not a & b


def test_render_cli_output_is_yaml_without_the_model_payload() -> None:
    text = render_offline((ROOT / "config/samples/fraudpipeline.yaml").read_text())
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 11 and all("apiVersion" in d for d in docs)


def test_invalid_spec_is_reported_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"spec\.flink\.parallelism"):
        parse_spec({**SAMPLE["spec"], "flink": {**SAMPLE["spec"]["flink"], "parallelism": 0}})


def _obs(children: list[dict[str, Any]], **kw: Any) -> Observation:
    return Observation(
        spec=parse_spec(SAMPLE["spec"]),
        model=kw.pop("model", ModelInfo(b"{}", "m1", "c1")),
        children=children,
        **kw,
    )


def _child(kind: str, status: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": kind.lower(), "namespace": "ns", "generation": 1},
        "spec": spec or {},
        "status": status,
    }


@pytest.mark.parametrize(
    ("reason", "child", "ready", "failed"),
    [
        (
            "topic ready",
            _child(
                "KafkaTopic",
                {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]},
            ),
            True,
            False,
        ),
        (
            "topic stale generation",
            _child(
                "KafkaTopic",
                {"observedGeneration": 0, "conditions": [{"type": "Ready", "status": "True"}]},
            ),
            False,
            False,
        ),
        (
            "flink running",
            _child(
                "FlinkDeployment",
                {"lifecycleState": "STABLE", "jobStatus": {"state": "RUNNING"}},
                {"job": {"state": "running"}},
            ),
            True,
            False,
        ),
        (
            "flink upgrading",
            _child(
                "FlinkDeployment", {"lifecycleState": "UPGRADING"}, {"job": {"state": "running"}}
            ),
            False,
            False,
        ),
        (
            "flink rolled back",
            _child(
                "FlinkDeployment", {"lifecycleState": "ROLLED_BACK"}, {"job": {"state": "running"}}
            ),
            False,
            True,
        ),
        (
            "job failed",
            _child("Job", {"conditions": [{"type": "Failed", "status": "True"}]}),
            False,
            True,
        ),
        ("database applied", _child("Database", {"applied": True}), True, False),
    ],
)
def test_child_health(reason: str, child: dict[str, Any], ready: bool, failed: bool) -> None:
    health = child_health(child)
    assert (health.ready, health.failed) == (ready, failed), reason


def test_status_is_stable_and_reports_transitions_once() -> None:
    flink = _child(
        "FlinkDeployment",
        {"lifecycleState": "FAILED", "error": "boom"},
        {"job": {"state": "running"}},
    )
    first, events = build_status(_obs([flink]), {}, 3, now="t1")
    assert first["phase"] == "Stalled" and first["observedGeneration"] == 3
    stalled = next(c for c in first["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and "boom" in stalled["message"]
    second, events = build_status(_obs([flink]), first, 3, now="t2")
    assert second == first and events == []  # unchanged: nothing to write, nothing to say
    assert stalled["lastTransitionTime"] == "t1"


def test_model_too_large_is_refused_before_apply() -> None:
    from streamflow_operator.reconcile import verify_model  # noqa: PLC0415

    info = verify_model(b"x" * (MAX_MODEL_BYTES + 1), "ConfigMap ns/m", None)
    assert info.error and "limit" in info.error and info.json is None
