"""Issue 12: the operator made safe in a shared cluster, each defect on the real control plane.

The session's operator runs with a resync of an hour (conftest): every reaction below comes from
the children's watches, never from a periodic pass.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import orjson
import pytest

from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, payload_checksum
from streamflow_operator.reconcile import render_offline
from tests.e2e.conftest import (
    KUBECONFIG,
    ROOT,
    SAMPLE,
    Kube,
    Operator,
    kubectl,
    pipeline,
    wait_for,
)
from tests.e2e.sim import (
    FLINK,
    FP,
    JOBS,
    TOPIC,
    children_exist,
    condition,
    make_ready,
    model_config_map,
    simulate_flink,
)

pytestmark = pytest.mark.e2e


def conditions_text(fp: dict[str, Any] | None) -> str:
    return " | ".join(
        f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}"
        for c in ((fp or {}).get("status") or {}).get("conditions") or []
    )


def our_events(kube: Kube, name: str, ns: str) -> list[dict[str, Any]]:
    """Events about the pipeline that the operator posted (not kopf's, not anyone else's)."""
    return [
        e
        for e in kube.events(name, ns)
        if (e.get("source") or {}).get("component") == "streamflow-operator"
        or e.get("reportingComponent") == "streamflow-operator"
    ]


def rendered(name: str, ns: str, kind: str, kafka_ns: str, airflow_ns: str) -> dict[str, Any]:
    """The first child of ``kind`` that `streamflow render` gives for this test's pipeline."""
    import yaml  # noqa: PLC0415

    body = pipeline(name, ns, kafka_ns, airflow_ns)
    text = render_offline(yaml.safe_dump(body))
    return next(d for d in yaml.safe_load_all(text) if d and d["kind"] == kind)


def retrained(version: str) -> dict[str, Any]:
    doc = orjson.loads(DEFAULT_MODEL_PATH.read_bytes())
    doc["training"] = {**doc["training"], "note": version}
    doc["model_version"] = version
    doc["checksum"] = payload_checksum(doc)
    return dict(doc)


# ---- safety: never touch what is not ours ---------------------------------------------------
def test_an_object_that_is_not_ours_is_never_changed_or_deleted(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    topic = rendered("taken", ns, "KafkaTopic", kafka_ns, airflow_ns)
    flink = rendered("taken", ns, "FlinkDeployment", kafka_ns, airflow_ns)
    rules = rendered("taken", ns, "ConfigMap", kafka_ns, airflow_ns)
    theirs = [
        {
            "apiVersion": topic["apiVersion"],
            "kind": "KafkaTopic",
            "metadata": {"name": topic["metadata"]["name"], "namespace": kafka_ns},
            "spec": {"partitions": 12, "replicas": 1, "config": {"cleanup.policy": "compact"}},
        },
        {
            "apiVersion": flink["apiVersion"],
            "kind": "FlinkDeployment",
            "metadata": {"name": flink["metadata"]["name"], "namespace": ns},
            "spec": {
                "image": "other-team/app:7",
                "flinkVersion": "v1_20",
                "serviceAccount": "flink",
                "job": {"jarURI": "local:///opt/other.jar", "upgradeMode": "stateless"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": rules["metadata"]["name"], "namespace": ns},
            "data": {"owner": "another team"},
        },
    ]
    before = {}
    for obj in theirs:
        live = kube.create(obj)
        before[obj["kind"]] = live
    kube.create(pipeline("taken", ns, kafka_ns, airflow_ns))

    # The rest of the platform is created; the pipeline names every object it will not touch.
    for obj in theirs:
        name = obj["metadata"]["name"]
        fp = wait_for(
            lambda name=name: (
                (fp := kube.get(*FP, "taken", ns)) and name in conditions_text(fp) and fp
            ),
            what=f"a condition naming {name}",
        )
        assert condition(fp, "Stalled")["status"] == "True", conditions_text(fp)
        wait_for(
            lambda name=name: any(
                e["type"] == "Warning" and name in e["message"]
                for e in our_events(kube, "taken", ns)
            ),
            what=f"a Warning event naming {name}",
        )
    for obj in theirs:
        md = obj["metadata"]
        live = kube.get(obj["apiVersion"], obj["kind"], md["name"], md["namespace"]) or {}
        old = before[obj["kind"]]
        assert live["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"], obj
        assert "ownerReferences" not in live["metadata"]
        assert live.get("spec", live.get("data")) == old.get("spec", old.get("data"))

    kube.delete(*FP, "taken", ns)
    wait_for(lambda: kube.get(*FP, "taken", ns) is None, what="pipeline deleted")
    for obj in theirs:  # neither the finalizer nor the garbage collector took them
        md = obj["metadata"]
        assert kube.get(obj["apiVersion"], obj["kind"], md["name"], md["namespace"]) is not None


def test_an_invalid_model_keeps_the_last_good_one_running(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    good = retrained("iforest-good0001")
    kube.create(model_config_map("model", ns, good))
    kube.create(
        pipeline(
            "steady",
            ns,
            kafka_ns,
            airflow_ns,
            model={"configMapName": "model", "version": "iforest-good0001"},
        )
    )
    make_ready(kube, "steady", ns, kafka_ns)
    deployed = {j: kube.get(*FLINK, f"steady-{j}", ns) or {} for j in JOBS}

    corrupt = copy.deepcopy(good)
    corrupt["training"] = {**corrupt["training"], "rows": 1}  # content changed, checksum not
    kube.patch(
        "v1", "ConfigMap", "model", ns, {"data": {"model.json": orjson.dumps(corrupt).decode()}}
    )
    fp = wait_for(
        lambda: (
            (fp := kube.get(*FP, "steady", ns))
            and "checksum mismatch" in condition(fp, "ModelReady").get("message", "")
            and fp
        ),
        what="ModelReady reports the bad artifact",
    )
    assert condition(fp, "ModelReady")["status"] == "False"
    assert fp["status"]["modelVersion"] == "iforest-good0001"  # still what runs
    for job in JOBS:
        live = kube.get(*FLINK, f"steady-{job}", ns) or {}
        assert live["spec"]["job"]["state"] == "running", job
        assert live["metadata"]["generation"] == deployed[job]["metadata"]["generation"], job
        assert live["spec"] == deployed[job]["spec"], job

    # A valid new model goes through, to the fraud-detector only.
    kube.patch(
        "v1", "ConfigMap", "model", ns, {"data": {"model.json": orjson.dumps(good).decode()}}
    )
    wait_for(
        lambda: condition(kube.get(*FP, "steady", ns), "ModelReady").get("status") == "True",
        what="ModelReady again",
    )


# ---- leaks ----------------------------------------------------------------------------------
def test_moving_the_topics_to_another_namespace_removes_the_old_ones(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    other = f"{kafka_ns}-b"
    kube.namespace(other)
    try:
        kube.create(pipeline("moved", ns, kafka_ns, airflow_ns))
        wait_for(lambda: children_exist(kube, "moved", ns, kafka_ns), what="children")
        kube.patch(*FP, "moved", ns, {"spec": {"kafka": {"namespace": other}}})
        wait_for(lambda: children_exist(kube, "moved", ns, other), what="topics in the new ns")
        wait_for(lambda: kube.list(*TOPIC, kafka_ns) == [], what="old topics removed")
        kube.delete(*FP, "moved", ns)
        wait_for(lambda: kube.list(*TOPIC, other) == [], what="new topics removed on delete")
    finally:
        kube.res("v1", "Namespace").delete(name=other)


def test_a_stuck_deletion_is_reported_and_bounded(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("stuck", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "stuck", ns, kafka_ns), what="children")
    held = f"{ns}-stuck-alerts"
    # Another controller's finalizer (as Strimzi's topic operator keeps one) holds the topic.
    kube.patch(*TOPIC, held, kafka_ns, {"metadata": {"finalizers": ["example.com/hold"]}})
    kube.delete(*FP, "stuck", ns)
    fp = wait_for(
        lambda: (
            (fp := kube.get(*FP, "stuck", ns))
            and held in condition(fp, "Ready").get("message", "")
            and fp
        ),
        what="the pipeline says what its deletion waits for",
    )
    assert "example.com/hold" in condition(fp, "Ready")["message"]
    assert any(t["metadata"]["name"] != held for t in kube.list(*TOPIC, kafka_ns)) is False
    # The bound (20 s in this suite): the pipeline goes, and says what it left behind.
    wait_for(lambda: kube.get(*FP, "stuck", ns) is None, timeout=40, what="the bound")
    assert any(
        e["type"] == "Warning" and held in e["message"] for e in our_events(kube, "stuck", ns)
    )
    kube.patch(*TOPIC, held, kafka_ns, {"metadata": {"finalizers": None}})
    wait_for(lambda: kube.get(*TOPIC, held, kafka_ns) is None, what="topic gone once released")


# ---- what each job carries ------------------------------------------------------------------
def test_a_rules_change_upgrades_only_the_fraud_detector(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("scoped", ns, kafka_ns, airflow_ns))
    make_ready(kube, "scoped", ns, kafka_ns)
    generations = {
        j: (kube.get(*FLINK, f"scoped-{j}", ns) or {})["metadata"]["generation"] for j in JOBS
    }
    kube.patch(*FP, "scoped", ns, {"spec": {"rules": {"velocity": {"maxCount": 9}}}})
    wait_for(
        lambda: (
            (kube.get(*FLINK, "scoped-fraud-detector", ns) or {})["metadata"]["generation"]
            > generations["fraud-detector"]
        ),
        what="the fraud-detector's spec changed",
    )
    simulate_flink(kube, "scoped", ns)
    wait_for(
        lambda: condition(kube.get(*FP, "scoped", ns), "Ready").get("status") == "True",
        what="Ready after the upgrade",
    )
    for job in ("transaction-processor", "realtime-aggregator"):
        live = kube.get(*FLINK, f"scoped-{job}", ns) or {}
        assert live["metadata"]["generation"] == generations[job], job


def test_each_job_gets_only_its_inputs_and_the_database_from_a_secret(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("wired", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "wired", ns, kafka_ns), what="children")
    control = wait_for(
        lambda: kube.get(*TOPIC, f"{ns}-wired-control", kafka_ns), what="the control topic"
    )
    assert control["spec"]["config"]["cleanup.policy"] == "compact"
    assert control["spec"]["topicName"] == f"streamflow.{ns}.wired.control"
    for job in JOBS:
        live = kube.get(*FLINK, f"wired-{job}", ns) or {}
        args = live["spec"]["job"]["args"]
        pod = live["spec"]["podTemplate"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])}
        assert "postgresql://" not in json.dumps(live["spec"]), job  # never in plain text
        if job in ("transaction-processor", "fraud-detector"):
            ref = env["STREAMFLOW_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "wired-pg-app", "key": "uri"}, job
        else:
            assert "STREAMFLOW_POSTGRES_DSN" not in env
        if job == "fraud-detector":
            assert args[args.index("--control-topic") + 1] == f"streamflow.{ns}.wired.control"
            assert {"rules", "model"} <= volumes
            assert "--rules" in args and "--model" in args
        else:
            assert "--rules" not in args and "--model" not in args and "--control-topic" not in args
            assert not {"rules", "model"} & volumes, job


# ---- status that tools and people can trust -------------------------------------------------
def test_ready_waits_until_every_child_observed_its_generation(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("kstatus", ns, kafka_ns, airflow_ns))
    make_ready(kube, "kstatus", ns, kafka_ns)
    detector = kube.get(*FLINK, "kstatus-fraud-detector", ns) or {}
    kube.patch(*FP, "kstatus", ns, {"spec": {"rules": {"alertThreshold": 0.8}}})
    fp = wait_for(
        lambda: (
            (fp := kube.get(*FP, "kstatus", ns))
            and fp["status"].get("observedGeneration") == fp["metadata"]["generation"]
            and (kube.get(*FLINK, "kstatus-fraud-detector", ns) or {})["metadata"]["generation"]
            > detector["metadata"]["generation"]
            and fp
        ),
        what="the pipeline observed the change and the detector's spec changed",
    )
    # The Flink operator has not acted yet: the rollout is in progress, not done.
    assert condition(fp, "Ready")["status"] == "False", conditions_text(fp)
    assert condition(fp, "Reconciling")["status"] == "True", conditions_text(fp)
    simulate_flink(kube, "kstatus", ns, jobs=("fraud-detector",))
    wait_for(
        lambda: condition(kube.get(*FP, "kstatus", ns), "Ready").get("status") == "True",
        what="Ready once the detector observed its generation",
    )


def test_events_come_from_the_operator_one_per_transition(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    # Invalid for the detector, although the CRD's schema lets it through.
    invalid_rules = {
        "mlAlpha": 0.5,
        **{
            r: {"enabled": False}
            for r in ("highValue", "velocity", "impossibleTravel", "unusualHour", "blacklist")
        },
    }
    kube.create(pipeline("talk", ns, kafka_ns, airflow_ns, rules=invalid_rules))
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "InvalidSpec"
            for e in our_events(kube, "talk", ns)
        ),
        what="a Warning event for the invalid spec",
    )
    kube.patch(*FP, "talk", ns, {"spec": {"rules": {"velocity": {"enabled": True}}}})
    wait_for(
        lambda: (
            (fp := kube.get(*FP, "talk", ns))
            and "held suspended until" in condition(fp, "FlinkReady").get("message", "")
            and fp
        ),
        what="FlinkReady says why the jobs are held",
    )
    recovered = wait_for(
        lambda: [e for e in our_events(kube, "talk", ns) if e["reason"] == "Recovered"],
        what="a Normal event for the recovery",
    )
    assert [e["type"] for e in recovered] == ["Normal"]
    make_ready(kube, "talk", ns, kafka_ns)
    wait_for(
        lambda: [e for e in our_events(kube, "talk", ns) if e["reason"] == "Ready"],
        what="a Ready event",
    )
    # A drift repair is said, as Normal.
    kube.patch(*FLINK, "talk-fraud-detector", ns, {"spec": {"job": {"parallelism": 99}}})
    repaired = wait_for(
        lambda: [e for e in our_events(kube, "talk", ns) if e["reason"] == "Repaired"],
        what="a Repaired event",
    )
    assert repaired[0]["type"] == "Normal" and "talk-fraud-detector" in repaired[0]["message"]
    for event in our_events(kube, "talk", ns):  # one event per transition, never a burst
        assert event.get("count", 1) == 1, event
    reasons = [e["reason"] for e in our_events(kube, "talk", ns)]
    assert reasons.count("Ready") == 1 and reasons.count("InvalidSpec") == 1, reasons


def test_a_pipeline_stalled_from_its_first_pass_says_so(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("nomodel", ns, kafka_ns, airflow_ns, model={"configMapName": "absent"}))
    warnings = wait_for(
        lambda: [e for e in our_events(kube, "nomodel", ns) if e["type"] == "Warning"],
        what="a Warning event on the first pass",
    )
    assert "absent" in warnings[0]["message"]


def test_an_idle_pipeline_writes_nothing(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("idle", ns, kafka_ns, airflow_ns))
    make_ready(kube, "idle", ns, kafka_ns)
    # Alone and at rest (the other tests' pipelines are gone), so the counters are this one's.
    wait_for(
        lambda: [p["metadata"]["namespace"] for p in kube.list(*FP, "")] == [ns],
        timeout=60,
        what="the other tests' pipelines gone",
    )
    wait_for(operator.idle, what="the operator at rest")
    passes = operator.metric("streamflow_reconciliations_total")
    writes = operator.samples("streamflow_api_writes_total")
    before = kube.get(*FP, "idle", ns) or {}
    # A change that is no change to the platform: the pipeline is passed over again...
    kube.patch(*FP, "idle", ns, {"metadata": {"labels": {"touched": "yes"}}})
    wait_for(
        lambda: operator.metric("streamflow_reconciliations_total") > passes and operator.idle(),
        what="another pass",
    )
    # ...and neither its status nor any child is written.
    assert operator.samples("streamflow_api_writes_total") == writes
    after = kube.get(*FP, "idle", ns) or {}
    assert after["status"] == before["status"]


def test_a_large_blacklist_is_refused_and_the_allowed_one_is_harmless(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    ns, kafka_ns, airflow_ns = namespaces
    big = pipeline("big", ns, kafka_ns, airflow_ns)
    big["spec"]["rules"]["blacklist"]["customers"] = [f"C{i:07d}" for i in range(25_000)]
    with pytest.raises(ApiException) as raised:
        kube.create(big)
    assert raised.value.status == 422
    assert "spec.rules.blacklist.customers" in orjson.loads(raised.value.body)["message"]

    from streamflow_operator.spec import MAX_INLINE_BLACKLIST  # noqa: PLC0415

    allowed = pipeline("allowed", ns, kafka_ns, airflow_ns)
    allowed["spec"]["rules"]["blacklist"]["customers"] = [
        f"C{i:063d}" for i in range(MAX_INLINE_BLACKLIST)
    ]
    allowed["spec"]["rules"]["blacklist"]["stores"] = [
        f"S{i:063d}" for i in range(MAX_INLINE_BLACKLIST)
    ]
    kube.create(allowed)
    make_ready(kube, "allowed", ns, kafka_ns)
    passes = operator.metric("streamflow_reconciliations_total")
    kube.patch(*FP, "allowed", ns, {"metadata": {"labels": {"touched": "yes"}}})
    wait_for(lambda: operator.metric("streamflow_reconciliations_total") > passes, what="a pass")
    fp = kube.get(*FP, "allowed", ns) or {}
    assert condition(fp, "Ready")["status"] == "True"
    annotations = fp["metadata"].get("annotations") or {}
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 64 * 1024


# ---- a newcomer gets to Ready ---------------------------------------------------------------
def test_the_readme_path_reaches_ready(operator: Operator, kube: Kube) -> None:
    """The sample exactly as shipped, the model published by the documented step, the
    children's statuses by the documented command (tests.e2e.sim)."""
    from tests.e2e import sim  # noqa: PLC0415

    md = SAMPLE["metadata"]
    kafka_ns = SAMPLE["spec"]["kafka"]["namespace"]
    airflow_ns = SAMPLE["spec"]["airflow"]["namespace"]
    for n in (md["namespace"], kafka_ns, airflow_ns):
        kube.namespace(n)
    try:
        subprocess.run(
            ["make", "-s", "publish-model", f"KUBECONFIG={KUBECONFIG}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                kubectl(),
                "--kubeconfig",
                str(KUBECONFIG),
                "apply",
                "-f",
                str(ROOT / "config/samples/fraudpipeline.yaml"),
            ],
            check=True,
            capture_output=True,
        )
        sim.main([md["name"], "--namespace", md["namespace"], "--kafka-namespace", kafka_ns])
        fp = kube.get(*FP, md["name"], md["namespace"]) or {}
        assert condition(fp, "Ready")["status"] == "True", conditions_text(fp)
    finally:
        kube.delete(*FP, md["name"], md["namespace"])
        wait_for(lambda: kube.get(*FP, md["name"], md["namespace"]) is None, what="deleted")
        for n in (md["namespace"], kafka_ns, airflow_ns):
            kube.res("v1", "Namespace").delete(name=n)


OPENAPI = "/openapi/v3/apis/streamflow.dev/v1alpha1"


def test_every_field_is_explained(cluster: Any) -> None:
    """What `kubectl explain fraudpipeline.spec` reads: the apiserver's OpenAPI v3."""
    raw = subprocess.run(
        [kubectl(), "--kubeconfig", str(KUBECONFIG), "get", "--raw", OPENAPI],
        check=True,
        capture_output=True,
    ).stdout
    data = json.loads(raw)
    schema = data["components"]["schemas"]["dev.streamflow.v1alpha1.FraudPipeline"]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if not node.get("description"):
            missing.append(path)
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict) and node["items"].get("properties"):
            for key, child in node["items"]["properties"].items():
                walk(child, f"{path}[].{key}")

    walk(schema["properties"]["spec"], "spec")
    assert missing == [], f"{len(missing)} fields without a description: {missing}"


# ---- `streamflow render` accepts what the apiserver accepts (refusals: test_operator.py)
def test_render_accepts_what_the_apiserver_accepts(cluster: Any, kube: Kube) -> None:
    import yaml  # noqa: PLC0415

    body = copy.deepcopy(SAMPLE)
    body["metadata"]["namespace"] = "default"
    kube.res(*FP).create(body=body, namespace="default", dry_run="All")
    assert render_offline(yaml.safe_dump(body))
