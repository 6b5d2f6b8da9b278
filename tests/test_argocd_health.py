"""config/argocd/fraudpipeline-health.lua (a fixed interface) run by a real Lua 5.1 interpreter
(ArgoCD embeds Lua 5.1) against statuses the operator's own status builder writes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from streamflow_operator.reconcile import parse_spec
from streamflow_operator.status import ModelInfo, Observation, build_status
from tests.test_operator_status import MODEL, RUNNING, SAMPLE, all_ready, child

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
HEALTH = ROOT / "config" / "argocd" / "fraudpipeline-health.lua"
LUA = shutil.which("lua5.1") or shutil.which("lua")


def lua_literal(value: Any) -> str:
    """A Python value as a Lua table constructor (JSON's types only)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string literal for this data
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    assert LUA is not None, "Lua 5.1 is installed by `make test` (Debian's lua5.1)"
    driver = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = dofile({json.dumps(str(HEALTH))})\n"
        'io.write(hs.status, "\\t", hs.message or "")\n'
    )
    out = subprocess.run([LUA, "-"], input=driver, capture_output=True, text=True, check=True)
    status, _, message = out.stdout.partition("\t")
    return status, message


def pipeline(status: dict[str, Any] | None, generation: int = 3, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "streamflow.dev/v1alpha1",
        "kind": "FraudPipeline",
        "metadata": {"name": "payments", "namespace": "fraud", "generation": generation},
        "spec": {**SAMPLE["spec"], **spec},
    }
    if status is not None:
        obj["status"] = status
    return obj


def written(obs: Observation, generation: int = 3) -> dict[str, Any]:
    status, _ = build_status(obs, {}, generation, now="2026-12-03T10:00:00Z")
    return status


def obs(children: list[dict[str, Any]], **kw: Any) -> Observation:
    spec = parse_spec({**SAMPLE["spec"], **kw.pop("spec", {})})
    return Observation(spec=spec, model=kw.pop("model", ModelInfo(MODEL)), children=children, **kw)


def test_a_new_pipeline_without_status_is_progressing() -> None:
    assert health(pipeline(None))[0] == "Progressing"


def test_ready_is_healthy() -> None:
    assert health(pipeline(written(obs(all_ready())))) == ("Healthy", "all children ready")


def test_a_status_about_an_older_generation_is_progressing() -> None:
    status = written(obs(all_ready()), generation=2)
    got = health(pipeline(status, generation=3))
    assert got == ("Progressing", "Waiting for the operator to observe generation 3")


def test_children_still_starting_are_progressing_with_the_reason() -> None:
    deploying = {**RUNNING, "lifecycleState": "DEPLOYED"}
    fd = child("FlinkDeployment", deploying, {"job": {"state": "running"}})
    starting = [c for c in all_ready() if c["kind"] != "FlinkDeployment"] + [fd]
    status, message = health(pipeline(written(obs(starting))))
    assert status == "Progressing" and message


def test_a_conflict_is_degraded_and_names_the_object() -> None:
    conflict = {"KafkaTopic/fraud/x": "KafkaTopic fraud/x exists and is not ours"}
    status, message = health(pipeline(written(obs(all_ready(), conflicts=conflict))))
    assert status == "Degraded" and "KafkaTopic fraud/x" in message


def test_an_invalid_spec_is_degraded() -> None:
    invalid = Observation(spec=None, model=ModelInfo(None), spec_error="spec.rules: bad")
    status, message = health(pipeline(written(invalid)))
    assert status == "Degraded" and "spec.rules: bad" in message


def test_a_suspended_pipeline_is_suspended() -> None:
    stopped = {"observedGeneration": 1, "lifecycleState": "SUSPENDED",
               "jobStatus": {"state": "FINISHED"}}  # fmt: skip
    children = [c for c in all_ready() if c["kind"] != "FlinkDeployment"] + [
        child("FlinkDeployment", stopped, {"job": {"state": "suspended"}})
    ]
    status = written(obs(children, spec={"suspend": True}))
    assert status["phase"] == "Suspended"
    assert health(pipeline(status, suspend=True))[0] == "Suspended"


def test_a_deletion_in_progress_is_progressing() -> None:
    deleting = Observation(spec=None, model=ModelInfo(None), deleting=["KafkaTopic/fraud/x"])
    status = written(deleting)
    assert status["phase"] == "Terminating"
    assert health(pipeline(status))[0] == "Progressing"


def test_the_argocd_cm_patch_carries_the_health_script_verbatim() -> None:
    import yaml  # noqa: PLC0415

    patch = yaml.safe_load((HEALTH.parent / "argocd-cm-health.yaml").read_text())
    script = patch["data"]["resource.customizations.health.streamflow.dev_FraudPipeline"]
    assert script == HEALTH.read_text(), "copy fraudpipeline-health.lua into argocd-cm-health.yaml"


@pytest.mark.parametrize("name", ["operator-application.yaml", "sample-application.yaml"])
def test_the_applications_point_at_what_the_repository_has(name: str) -> None:
    import yaml  # noqa: PLC0415

    app = yaml.safe_load((HEALTH.parent / name).read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source = app["spec"]["source"]
    folder = ROOT / source["path"]
    assert folder.is_dir(), source["path"]
    if "helm" in source:  # the chart, with values its schema accepts
        schema = json.loads((folder / "values.schema.json").read_text())
        assert set(source["helm"]["valuesObject"]) <= set(schema["properties"])
        assert (folder / "Chart.yaml").exists()
    else:  # the sample pipeline, in the namespace it declares
        manifest = yaml.safe_load((folder / source["directory"]["include"]).read_text())
        assert manifest["kind"] == "FraudPipeline"
        assert manifest["metadata"]["namespace"] == app["spec"]["destination"]["namespace"]
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
