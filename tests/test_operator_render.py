"""The operator's pure parts: CRD generation, rendering, local CEL. No cluster."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow_jobs.flink.args import parse_args
from streamflow_jobs.rules.config import RulesConfig
from streamflow_operator.crd import CHART_CRD_PATH, CRD_PATH, build_crd, crd_yaml
from streamflow_operator.reconcile import (
    SpecError,
    parse_spec,
    render_offline,
    render_with_notes,
    verify_model,
)
from streamflow_operator.render import Meta, PublishedModel, render_all
from streamflow_operator.render.flink import DSN_ENV, JOBS
from streamflow_operator.render.kafka import topic_name
from streamflow_operator.render.model import MAX_MODEL_BYTES
from streamflow_operator.spec import MAX_INLINE_BLACKLIST, FraudPipelineSpec
from tests.specs import merge

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())
MODEL = PublishedModel("payments-model-0123456789", "m1", "sha256:0123456789abcdef", b"{}")
ALL_JOBS = frozenset(JOBS)


def meta(**kw: Any) -> Meta:
    base = Meta("payments", "fraud", uid="u-1", app_secret_uri="postgresql://x", model=MODEL)
    return replace(base, **kw)


def flink(spec_dict: dict[str, Any], m: Meta | None = None) -> dict[str, dict[str, Any]]:
    children = render_all(parse_spec(spec_dict), m or meta())
    return {
        c["metadata"]["name"].removeprefix("payments-"): c
        for c in children
        if c["kind"] == "FlinkDeployment"
    }


def with_rules(**rules: Any) -> dict[str, Any]:
    return {**SAMPLE["spec"], "rules": {**SAMPLE["spec"]["rules"], **rules}}


def test_committed_crd_matches_the_models() -> None:
    assert CRD_PATH.read_text() == crd_yaml(), "run `streamflow crd` and commit crds/"
    assert CHART_CRD_PATH.read_text() == crd_yaml(), "run `streamflow crd` and commit the chart"


def test_the_reference_doc_matches_the_models_and_lists_every_field() -> None:
    from streamflow_operator.crd import REFERENCE_PATH, reference_markdown  # noqa: PLC0415

    doc = reference_markdown()
    assert REFERENCE_PATH.read_text() == doc, "run `streamflow crd` and commit docs/reference/"
    for field in (
        "`spec.rules.impossibleTravel.action`",
        "`spec.shadow.model.configMapName`",
        "`spec.kafka.topics.deadLetters.retentionHours`",
        "`status.shadowModelVersion`",
    ):
        assert field in doc  # fmt: skip


def test_crd_is_deterministic_and_structural() -> None:
    assert crd_yaml() == crd_yaml()
    text = yaml.safe_dump(build_crd())
    for forbidden in ("$ref", "$defs", "additionalProperties: false", "const:", "type: 'null'"):
        assert forbidden not in text


def test_every_spec_field_has_a_description() -> None:
    """`kubectl explain fraudpipeline.spec` explains every field."""
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if not node.get("description"):
            missing.append(path)
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}")

    walk(root["properties"]["spec"], "spec")
    walk(root["properties"]["status"], "status")
    assert missing == []


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
            if f"{path}{key}" == "spec.shadow.rules":
                continue  # an overlay on spec.rules: it sets only what the challenger changes
            if hasattr(type(value), "model_fields"):
                missing += unset(value, data[key], f"{path}{key}.")
        return missing

    spec = FraudPipelineSpec.model_validate(SAMPLE["spec"])
    assert unset(spec, SAMPLE["spec"], "spec.") == []


def test_the_sample_pins_the_model_the_repository_ships() -> None:
    from streamflow_operator.reconcile import builtin_model  # noqa: PLC0415

    assert SAMPLE["spec"]["model"]["version"] == builtin_model().version


def test_render_gives_every_child_in_apply_order() -> None:
    kinds = [c["kind"] for c in render_all(parse_spec(SAMPLE["spec"]), meta())]
    assert kinds == [
        *["ConfigMap"] * 3,  # rules, the shadow's rules, the model
        "ConfigMap",  # the custom queries of CloudNativePG's metrics exporter
        "Cluster",
        "Database",
        "Job",
        *["KafkaTopic"] * 6,  # with the shadow's verdicts
        "Secret",
        *["FlinkDeployment"] * 3,
    ]


def test_the_control_topic_is_compacted_and_reaches_the_fraud_detector() -> None:
    children = render_all(parse_spec(SAMPLE["spec"]), meta())
    control = next(c for c in children if c["metadata"]["name"].endswith("-control"))
    assert control["spec"]["topicName"] == topic_name(meta(), "control")
    assert control["spec"]["config"]["cleanup.policy"] == "compact"
    assert "retention.ms" not in control["spec"]["config"]
    args = flink(SAMPLE["spec"])["fraud-detector"]["spec"]["job"]["args"]
    assert args[args.index("--control-topic") + 1] == "streamflow.fraud.payments.control"


@pytest.mark.parametrize(
    ("job", "database", "rules", "model", "topics"),
    [
        ("transaction-processor", True, False, False, {"transactions", "dead-letter"}),
        (
            "fraud-detector",
            True,
            True,
            True,
            {"transactions", "alerts", "dead-letter", "control", "shadow"},
        ),
        ("realtime-aggregator", False, False, False, {"transactions", "alerts", "metrics"}),
    ],
)
def test_each_job_carries_only_what_it_uses(
    job: str, database: bool, rules: bool, model: bool, topics: set[str]
) -> None:
    fd = flink(SAMPLE["spec"])[job]
    args = fd["spec"]["job"]["args"]
    pod = fd["spec"]["podTemplate"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert (DSN_ENV in env) is database
    if database:
        assert env[DSN_ENV]["valueFrom"]["secretKeyRef"] == {
            "name": "payments-pg-app",
            "key": "uri",
        }
    assert "postgresql://" not in json.dumps(fd)  # the DSN is never in the manifest
    volumes = {v["name"] for v in pod.get("volumes", [])}
    assert ("rules" in volumes, "--rules" in args) == (rules, rules)
    assert ("model" in volumes, "--model" in args) == (model, model)
    assert {a[2:].removesuffix("-topic") for a in args if a.endswith("-topic")} == topics
    for name in ("--bootstrap-servers", "--transactions-topic"):  # the jobs' argument names
        assert name in args


@pytest.mark.parametrize(
    ("change", "upgraded"),
    [
        (with_rules(alertThreshold=0.8), {"fraud-detector"}),
        (with_rules(blacklist={"customers": ["C1"], "stores": []}), {"fraud-detector"}),
        (
            {**SAMPLE["spec"], "flink": {**SAMPLE["spec"]["flink"], "image": "x/y:2"}},
            set(JOBS),
        ),
        (SAMPLE["spec"], set()),
    ],
    ids=["rules", "blacklist", "image", "nothing"],
)
def test_a_change_reaches_only_the_jobs_that_use_it(
    change: dict[str, Any], upgraded: set[str]
) -> None:
    before, after = flink(SAMPLE["spec"]), flink(change)
    assert {j for j in JOBS if before[j]["spec"] != after[j]["spec"]} == upgraded


def test_a_new_model_upgrades_only_the_fraud_detector() -> None:
    other = replace(MODEL, config_map="payments-model-fedcba9876", version="m2")
    before, after = flink(SAMPLE["spec"]), flink(SAMPLE["spec"], meta(model=other))
    assert {j for j in JOBS if before[j]["spec"] != after[j]["spec"]} == {"fraud-detector"}
    volumes = after["fraud-detector"]["spec"]["podTemplate"]["spec"]["volumes"]
    assert {"name": "model", "configMap": {"name": "payments-model-fedcba9876"}} in volumes


def test_without_a_valid_model_the_fraud_detector_is_held_back() -> None:
    assert set(flink(SAMPLE["spec"], meta(model=None))) == {
        "transaction-processor",
        "realtime-aggregator",
    }


@pytest.mark.parametrize(
    ("running", "suspend", "state"),
    [
        (frozenset(), False, "suspended"),
        (ALL_JOBS, False, "running"),
        (ALL_JOBS, True, "suspended"),
    ],
)
def test_jobs_run_only_when_let(running: frozenset[str], suspend: bool, state: str) -> None:
    spec = {**SAMPLE["spec"], "suspend": suspend}
    assert {fd["spec"]["job"]["state"] for fd in flink(spec, meta(running=running)).values()} == {
        state
    }


def test_rules_and_models_are_content_addressed_and_immutable() -> None:
    def config_maps(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        children = render_all(parse_spec(spec), meta())
        return {
            c["metadata"]["name"]: c
            for c in children
            if c["kind"] == "ConfigMap" and not c["metadata"]["name"].endswith("-pg-monitoring")
        }

    a, b = config_maps(SAMPLE["spec"]), config_maps(with_rules(alertThreshold=0.8))
    assert all(c["immutable"] for c in a.values())
    assert MODEL.config_map in a and MODEL.config_map in b
    assert len(set(a) ^ set(b)) == 2  # one rules ConfigMap each, under different names


def test_names_never_collide_across_namespaces() -> None:
    spec = parse_spec(SAMPLE["spec"])

    def keys(ns: str) -> set[tuple[str, str, str]]:
        return {
            (c["kind"], c["metadata"]["namespace"], c["metadata"]["name"])
            for c in render_all(spec, meta(namespace=ns))
        }

    assert not keys("team-a") & keys("team-b")


def test_children_carry_the_ownership_proof() -> None:
    for child in render_all(parse_spec(SAMPLE["spec"]), meta()):
        labels = child["metadata"]["labels"]
        assert labels["streamflow.dev/pipeline-uid"] == "u-1"
        assert labels["app.kubernetes.io/part-of"] == "streamflow"
        same_ns = child["metadata"]["namespace"] == "fraud"
        assert ("ownerReferences" in child["metadata"]) is same_ns


def test_render_cli_output_is_yaml_and_says_what_it_leaves_out() -> None:
    text, notes = render_with_notes((ROOT / "config/samples/fraudpipeline.yaml").read_text())
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 15 and all("apiVersion" in d for d in docs)
    assert any("Secret airflow/fraud-payments-airflow-conn" in n for n in notes)
    assert any("payments-model-v1" in n for n in notes)
    assert any("the shadow model" in n for n in notes)


def test_a_shadow_challenger_is_mounted_beside_the_live_inputs_of_the_fraud_detector() -> None:
    shadow_model = PublishedModel("payments-model-fedcba9876", "m2", "sha256:fedcba98", b"{}")
    spec = parse_spec(SAMPLE["spec"])
    children = render_all(spec, meta(shadow_model=shadow_model))
    by_name = {c["metadata"]["name"]: c for c in children}
    fd = by_name["payments-fraud-detector"]
    args = fd["spec"]["job"]["args"]
    pod = fd["spec"]["podTemplate"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert volumes["shadow-model"] == "payments-model-fedcba9876" in by_name
    text = by_name[volumes["shadow-rules"]]["data"]["rules.yaml"]
    shadow_rules = RulesConfig.model_validate(yaml.safe_load(text))
    # An overlay: the challenger's own fields, the live rules' others (the blacklist, say).
    assert shadow_rules.alert_threshold == 0.6 and shadow_rules.velocity.max_count == 4
    assert shadow_rules.blacklist.customers == spec.rules.blacklist.customers == ["C00028"]
    assert args[args.index("--shadow-topic") + 1] == topic_name(meta(), "shadow")
    assert args[args.index("--shadow-rules") + 1].startswith("/etc/streamflow/shadow-rules/")
    assert args[args.index("--shadow-model") + 1] == "/etc/streamflow/shadow-model/model.json"
    assert parse_args(args[args.index("-pym") + 2 :], prog="fraud-detector").shadow_topic
    # The other jobs know nothing of it; without a shadow, nothing of it is rendered.
    for job in ("payments-transaction-processor", "payments-realtime-aggregator"):
        assert "shadow" not in json.dumps(by_name[job])
    plain = render_all(parse_spec({**SAMPLE["spec"], "shadow": None}), meta())
    assert "shadow" not in json.dumps(plain)


def test_a_shadow_model_never_valid_runs_no_shadow_model() -> None:
    spec = parse_spec({**SAMPLE["spec"], "shadow": {"model": {"configMapName": "cand"}}})
    fd = next(c for c in render_all(spec, meta()) if c["kind"] == "FlinkDeployment" and
              c["metadata"]["name"] == "payments-fraud-detector")  # fmt: skip
    assert "shadow" not in json.dumps(fd)  # nothing of its own that is valid: no shadow
    spec = parse_spec(SAMPLE["spec"])  # rules and a never-valid model: the rules alone
    args = flink(SAMPLE["spec"])["fraud-detector"]["spec"]["job"]["args"]
    assert "--shadow-rules" in args and "--shadow-model" not in args
    assert spec.shadow is not None


def test_render_with_the_built_in_model_shows_its_size_not_its_bytes() -> None:
    doc = {**SAMPLE, "spec": {**SAMPLE["spec"], "model": {}}}
    text = render_offline(yaml.safe_dump(doc))
    model = next(
        d
        for d in yaml.safe_load_all(text)
        if d and d["metadata"]["name"].startswith("payments-model-")
    )
    assert model["data"]["model.json"].startswith("<") and "bytes" in model["data"]["model.json"]


CEL_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "same state dirs",
        {"flink": {"savepointDir": "s3://streamflow-state/checkpoints"}},
        'spec.flink: Invalid value: "object": savepointDir must differ from checkpointDir',
    ),
    (
        "reference without name",
        {"postgres": {"create": False, "clusterName": None}},
        "clusterName is required when create is false",
    ),
    (
        "model version alone",
        {"model": {"configMapName": None, "version": "x"}},
        "version pins a model",
    ),
    (
        "defaults count",  # `create` defaults to true, so no clusterName is fine
        {"postgres": {"clusterName": None, "create": None}},
        "",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_the_crds_cel_rules_are_evaluated_locally(
    case: str, change: dict[str, Any], message: str
) -> None:
    spec = merge(SAMPLE["spec"], change)
    if not message:
        parse_spec(spec)
        return
    with pytest.raises(SpecError, match="Invalid value") as raised:
        parse_spec(spec)
    assert message in str(raised.value)


def test_a_long_name_is_refused_like_the_apiserver_does() -> None:
    doc = {**SAMPLE, "metadata": {"name": "p" * 37, "namespace": "fraud"}}
    with pytest.raises(SpecError, match=r"metadata\.name must be at most 36"):
        render_offline(yaml.safe_dump(doc))


def test_the_inline_blacklist_is_bounded() -> None:
    big = with_rules(blacklist={"customers": [f"C{i}" for i in range(MAX_INLINE_BLACKLIST + 1)]})
    with pytest.raises(SpecError, match="control topic"):
        parse_spec(big)
    crd = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    customers = crd["properties"]["spec"]["properties"]["rules"]["properties"]["blacklist"][
        "properties"
    ]["customers"]
    assert customers["maxItems"] == MAX_INLINE_BLACKLIST and customers["items"]["maxLength"] == 64


def test_invalid_spec_is_reported_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"spec\.flink\.parallelism"):
        parse_spec({**SAMPLE["spec"], "flink": {**SAMPLE["spec"]["flink"], "parallelism": 0}})


def test_model_too_large_is_refused_before_apply() -> None:
    with pytest.raises(ValueError, match="limit"):
        verify_model(b"x" * (MAX_MODEL_BYTES + 1), "ConfigMap ns/m", None)


def test_the_kind_sample_is_a_valid_pipeline_sized_for_one_node() -> None:
    """e2e/kind/fraudpipeline.yaml (make e2e-kind, not run here) passes the spec's validation
    and fits a one-node Kafka and PostgreSQL."""
    text = (ROOT / "e2e" / "kind" / "fraudpipeline.yaml").read_text()
    doc = yaml.safe_load(text.replace("@JOBS_IMAGE@", "localhost/streamflow/jobs:0.1.0"))
    spec = parse_spec(doc["spec"])
    assert {t.replicas for t in spec.kafka.topics.__dict__.values()} == {1}
    assert spec.postgres.instances == 1
    assert render_all(spec, meta())


def test_every_job_runs_on_a_read_only_image_with_scratch_space_and_restartable_python() -> None:
    """What the jobs image needs in Kubernetes (ADR 0040): /tmp and Flink's log directory as
    emptyDirs, artifacts under /tmp, pemja loaded parent-first (a restarted job)."""
    for fd in (
        c for c in render_all(parse_spec(SAMPLE["spec"]), meta()) if c["kind"] == "FlinkDeployment"
    ):
        pod = fd["spec"]["podTemplate"]["spec"]
        (container,) = pod["containers"]
        scratch = {v["name"] for v in pod["volumes"] if v.get("emptyDir") == {}}
        mounted = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in scratch}
        assert mounted == {"/tmp", "/opt/flink/log"}, fd["metadata"]["name"]
        config = fd["spec"]["flinkConfiguration"]
        assert config["user.artifacts.base-dir"].startswith("/tmp/")
        assert "pemja." in config["classloader.parent-first-patterns.additional"]
