"""The operator (a real `kopf run` process) against a real kube-apiserver."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
import yaml

from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, payload_checksum
from streamflow_operator.reconcile import builtin_model, render_offline
from tests.e2e.conftest import Kube, Operator, pipeline, wait_for
from tests.e2e.sim import (
    CLUSTER,
    DATABASE,
    FLINK,
    FP,
    JOB,
    JOBS,
    TOPIC,
    TOPICS,
    children_exist,
    condition,
    make_ready,
    model_config_map,
    now,
    simulate_flink,
)
from tests.specs import merge

pytestmark = pytest.mark.e2e


def rules_config_map(kube: Kube, name: str, ns: str) -> dict[str, Any]:
    (rules,) = [
        c
        for c in kube.list("v1", "ConfigMap", ns)
        if c["metadata"]["name"].startswith(f"{name}-rules-")
    ]
    return rules


def test_create_renders_every_child(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    fp = kube.create(pipeline("payments", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "payments", ns, kafka_ns), what="children")
    topic = kube.get(*TOPIC, f"{ns}-payments-transactions", kafka_ns)
    assert topic is not None
    assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "events"
    assert topic["spec"] == {
        "topicName": f"streamflow.{ns}.payments.transactions",
        "partitions": 3,
        "replicas": 3,
        "config": {
            "retention.ms": str(168 * 3_600_000),
            "min.insync.replicas": "2",
            "cleanup.policy": "delete",
        },
    }
    assert "ownerReferences" not in topic["metadata"]  # cross-namespace: finalizer deletes it
    flink = kube.get(*FLINK, "payments-fraud-detector", ns)
    assert flink is not None
    job = flink["spec"]["job"]
    assert job["upgradeMode"] == "savepoint" and job["state"] == "suspended"
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["args"][:5] == [
        "-pyclientexec",
        "/usr/bin/python3",
        "-pym",
        "streamflow_jobs.flink.fraud_detector",
        "--bootstrap-servers",
    ]
    assert job["parallelism"] == 4
    conf = flink["spec"]["flinkConfiguration"]
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    owner = flink["metadata"]["ownerReferences"][0]
    assert owner["uid"] == fp["metadata"]["uid"] and owner["controller"] is True
    database = kube.get(*DATABASE, "payments-db", ns)
    assert database is not None
    assert [s["name"] for s in database["spec"]["schemas"]] == ["bronze", "silver", "gold"]
    status = wait_for(lambda: (kube.get(*FP, "payments", ns) or {}).get("status"), what="status")
    assert status["phase"] == "Progressing"
    ready = condition({"status": status}, "Ready")
    assert ready["status"] == "False" and "payments-pg" in ready["message"]
    assert status["modelVersion"] == builtin_model().version
    assert condition({"status": status}, "Reconciling")["status"] == "True"


def test_children_statuses_make_it_ready_and_airflow_connection_appears(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("ready", ns, kafka_ns, airflow_ns))
    fp = make_ready(kube, "ready", ns, kafka_ns)
    status = fp["status"]
    assert status["phase"] == "Ready" and status["topicsReady"] == "5/5"
    assert status["jobsRunning"] == "3/3"
    assert condition(fp, "Stalled")["status"] == "False"
    for component in (
        "KafkaReady",
        "DatabaseReady",
        "MigrationsReady",
        "FlinkReady",
        "AirflowReady",
        "ModelReady",
    ):
        assert condition(fp, component)["status"] == "True", component
    secret = kube.get("v1", "Secret", f"{ns}-ready-airflow-conn", airflow_ns)
    assert secret is not None
    assert secret["metadata"]["labels"]["airflow.apache.org/connection-id"] == "streamflow_postgres"
    assert base64.b64decode(secret["data"]["value"]).decode().startswith("postgresql://")


def test_a_stuck_child_is_named(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("stuck", ns, kafka_ns, airflow_ns))
    make_ready(kube, "stuck", ns, kafka_ns)
    kube.patch_status(
        *TOPIC,
        f"{ns}-stuck-alerts",
        kafka_ns,
        {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "KafkaError",
                    "message": "Not enough brokers",
                    "lastTransitionTime": now(),
                }
            ]
        },
    )
    fp = wait_for(
        lambda: (
            (fp := kube.get(*FP, "stuck", ns))
            and condition(fp, "KafkaReady").get("status") == "False"
            and fp
        ),
        what="KafkaReady=False",
    )
    assert f"{ns}-stuck-alerts" in condition(fp, "KafkaReady")["message"]
    assert "Not enough brokers" in condition(fp, "Ready")["message"]


def test_rules_and_model_changes_become_savepoint_upgrades(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("upgrade", ns, kafka_ns, airflow_ns))
    make_ready(kube, "upgrade", ns, kafka_ns)

    def annotations() -> dict[str, str]:
        flink = kube.get(*FLINK, "upgrade-fraud-detector", ns) or {}
        return dict(flink["spec"]["podTemplate"]["metadata"]["annotations"])

    before = annotations()
    kube.patch(*FP, "upgrade", ns, {"spec": {"rules": {"velocity": {"maxCount": 8}}}})
    wait_for(
        lambda: (
            annotations()["streamflow.dev/rules-checksum"]
            != before["streamflow.dev/rules-checksum"]
        ),
        what="rules checksum in the spec",
    )
    rules = rules_config_map(kube, "upgrade", ns)
    assert "max_count: 8" in rules["data"]["rules.yaml"]
    # The Flink operator now upgrades: stop with savepoint, redeploy from it.
    simulate_flink(kube, "upgrade", ns, state="UPGRADING")
    wait_for(
        lambda: (kube.get(*FP, "upgrade", ns) or {}).get("status", {}).get("phase") == "Upgrading",
        what="phase Upgrading",
    )
    simulate_flink(kube, "upgrade", ns, savepoint="s3://sp/upgrade-1")
    fp = wait_for(
        lambda: (fp := kube.get(*FP, "upgrade", ns)) and fp["status"]["phase"] == "Ready" and fp,
        what="Ready after the upgrade",
    )
    assert fp["status"]["lastSavepoint"].startswith("s3://sp/upgrade-1/")

    # A new model, published as a ConfigMap and pinned by version.
    doc = orjson.loads(DEFAULT_MODEL_PATH.read_bytes())
    doc["training"] = {**doc["training"], "note": "retrained"}
    doc["model_version"] = "iforest-retrained01"
    doc["checksum"] = payload_checksum(doc)
    kube.create(model_config_map("model-v2", ns, doc))
    kube.patch(
        *FP,
        "upgrade",
        ns,
        {"spec": {"model": {"configMapName": "model-v2", "version": "iforest-retrained01"}}},
    )
    wait_for(
        lambda: annotations()["streamflow.dev/model-version"] == "iforest-retrained01",
        what="model version in the spec",
    )
    flink = kube.get(*FLINK, "upgrade-fraud-detector", ns) or {}
    volumes = {v["name"]: v for v in flink["spec"]["podTemplate"]["spec"]["volumes"]}
    published = volumes["model"]["configMap"]["name"]  # our verified copy, by checksum
    assert published == f"upgrade-model-{doc['checksum'].split(':')[1][:10]}"
    copy_ = kube.get("v1", "ConfigMap", published, ns) or {}
    assert copy_["data"]["model.json"] == orjson.dumps(doc).decode()
    wait_for(
        lambda: (
            (kube.get(*FP, "upgrade", ns) or {}).get("status", {}).get("modelVersion")
            == "iforest-retrained01"
        ),
        what="status.modelVersion",
    )


def test_a_tampered_model_stalls_with_a_clear_message(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    doc = orjson.loads(DEFAULT_MODEL_PATH.read_bytes())
    doc["training"] = {**doc["training"], "rows": 1}  # content changed, checksum not
    kube.create(model_config_map("bad-model", ns, doc))
    kube.create(
        pipeline("tampered", ns, kafka_ns, airflow_ns, model={"configMapName": "bad-model"})
    )
    fp = wait_for(
        lambda: (
            (fp := kube.get(*FP, "tampered", ns))
            and condition(fp, "Stalled").get("status") == "True"
            and fp
        ),
        what="Stalled",
    )
    assert "checksum mismatch" in condition(fp, "ModelReady")["message"]
    assert fp["status"]["phase"] == "Stalled"


def test_drift_is_corrected(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("drift", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "drift", ns, kafka_ns), what="children")
    kube.delete(*TOPIC, f"{ns}-drift-metrics", kafka_ns)
    kube.patch(
        *FLINK,
        "drift-fraud-detector",
        ns,
        {"spec": {"job": {"parallelism": 99}}, "metadata": {"labels": {"team": "x"}}},
    )
    rules = rules_config_map(kube, "drift", ns)
    kube.delete("v1", "ConfigMap", rules["metadata"]["name"], ns)
    wait_for(lambda: kube.get(*TOPIC, f"{ns}-drift-metrics", kafka_ns), what="topic restored")
    wait_for(
        lambda: (
            (kube.get(*FLINK, "drift-fraud-detector", ns) or {})["spec"]["job"]["parallelism"] == 4
        ),
        what="parallelism restored",
    )
    wait_for(
        lambda: kube.get("v1", "ConfigMap", rules["metadata"]["name"], ns), what="rules restored"
    )
    flink = kube.get(*FLINK, "drift-fraud-detector", ns) or {}
    assert flink["metadata"]["labels"]["team"] == "x"  # others' labels are kept


def test_deleting_the_pipeline_deletes_every_child(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("gone", ns, kafka_ns, airflow_ns))
    make_ready(kube, "gone", ns, kafka_ns)
    assert kube.get("v1", "Secret", f"{ns}-gone-airflow-conn", airflow_ns) is not None
    kube.delete(*FP, "gone", ns)
    wait_for(lambda: kube.get(*FP, "gone", ns) is None, what="pipeline deleted")
    wait_for(
        lambda: not any(kube.get(*TOPIC, f"{ns}-gone-{t}", kafka_ns) for t in TOPICS),
        what="cross-namespace topics deleted by the finalizer",
    )
    assert kube.get("v1", "Secret", f"{ns}-gone-airflow-conn", airflow_ns) is None
    # Same namespace: the controller manager's garbage collector follows ownerReferences.
    wait_for(
        lambda: (
            not any(kube.get(*FLINK, f"gone-{j}", ns) for j in JOBS)
            and kube.get(*CLUSTER, "gone-pg", ns) is None
            and not [
                c
                for c in kube.list("v1", "ConfigMap", ns)
                if c["metadata"]["name"].startswith("gone-")
            ]
        ),
        what="same-namespace children garbage-collected",
    )


def test_disabling_a_job_removes_its_deployment(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("partial", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "partial", ns, kafka_ns), what="children")
    kube.patch(
        *FP,
        "partial",
        ns,
        {"spec": {"flink": {"jobs": {"realtimeAggregator": {"enabled": False}}}}},
    )
    wait_for(
        lambda: kube.get(*FLINK, "partial-realtime-aggregator", ns) is None,
        what="aggregator deployment deleted",
    )
    assert kube.get(*FLINK, "partial-fraud-detector", ns) is not None


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    for i in range(10):
        kube.create(pipeline(f"crash{i}", ns, kafka_ns, airflow_ns))
    operator.kill()  # while it is working through them
    operator.start()
    for i in range(10):
        wait_for(
            lambda i=i: children_exist(kube, f"crash{i}", ns, kafka_ns),
            timeout=60,
            what=f"crash{i} children",
        )
    flinks = kube.list(*FLINK, ns)
    assert len(flinks) == 30 and len({f["metadata"]["name"] for f in flinks}) == 30
    assert len(kube.list(*TOPIC, kafka_ns)) == 50
    assert len(kube.list(*JOB, ns)) == 10


def test_fifty_pipelines_at_once(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    ns, kafka_ns, airflow_ns = namespaces
    for i in range(50):
        kube.create(pipeline(f"p{i:02d}", ns, kafka_ns, airflow_ns))
    wait_for(lambda: len(kube.list(*FLINK, ns)) == 150, timeout=120, what="150 deployments")
    wait_for(
        lambda: all(
            (fp.get("status") or {}).get("observedGeneration") == 1 for fp in kube.list(*FP, ns)
        ),
        timeout=120,
        what="50 statuses",
    )
    assert len(kube.list(*TOPIC, kafka_ns)) == 250


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("missing kafka", {"kafka": None}, "spec.kafka"),
    ("missing flink image", {"flink": {"image": None}}, "spec.flink.image"),
    (
        "zero partitions",
        {"kafka": {"topics": {"alerts": {"partitions": 0}}}},
        "spec.kafka.topics.alerts.partitions",
    ),
    (
        "dead letters outlive",
        {"kafka": {"topics": {"deadLetters": {"retentionHours": 1}}}},
        "deadLetters.retentionHours must be at least",
    ),
    ("bad cluster name", {"kafka": {"clusterName": "Events_1"}}, "spec.kafka.clusterName"),
    ("flink version", {"flink": {"flinkVersion": "v1_12"}}, "spec.flink.flinkVersion"),
    ("parallelism 0", {"flink": {"parallelism": 0}}, "spec.flink.parallelism"),
    (
        "same state dirs",
        {"flink": {"savepointDir": "s3://streamflow-state/checkpoints"}},
        "savepointDir must differ from checkpointDir",
    ),
    (
        "checkpoint dir scheme",
        {"flink": {"checkpointDir": "/tmp/ckpt"}},
        "spec.flink.checkpointDir",
    ),
    (
        "reference without name",
        {"postgres": {"create": False, "clusterName": None}},
        "clusterName is required when create is false",
    ),
    (
        "schemas incomplete",
        {"postgres": {"schemas": ["bronze"]}},
        "schemas must include bronze, silver and gold",
    ),
    ("instances", {"postgres": {"instances": 12}}, "spec.postgres.instances"),
    ("alert threshold", {"rules": {"alertThreshold": 1.5}}, "spec.rules.alertThreshold"),
    ("ml alpha", {"rules": {"mlAlpha": -0.1}}, "spec.rules.mlAlpha"),
    ("velocity count", {"rules": {"velocity": {"maxCount": 0}}}, "spec.rules.velocity.maxCount"),
    (
        "high value multiplier",
        {"rules": {"highValue": {"multiplier": 1}}},
        "spec.rules.highValue.multiplier",
    ),
    (
        "model version alone",
        {"model": {"version": "iforest-x"}},
        "version pins a model from configMapName",
    ),
    ("connection id", {"airflow": {"connectionId": "bad id!"}}, "spec.airflow.connectionId"),
    ("image reference", {"flink": {"image": "Not An Image!"}}, "spec.flink.image"),
    (
        "fraud detector parallelism",
        {"flink": {"parallelism": 1, "jobs": {"fraudDetector": {"parallelism": 500}}}},
        "must not exceed 128 x parallelism",
    ),
]


@pytest.mark.parametrize(("case", "change", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_rejected_by_the_apiserver_and_by_render(
    cluster: Any, kube: Kube, case: str, change: dict[str, Any], field: str
) -> None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    body = pipeline("invalid", "default", "kafka", "airflow")
    body["spec"] = merge(body["spec"], change)
    with pytest.raises(ApiException) as raised:
        kube.res(*FP).create(body=body, namespace="default", dry_run="All")
    message = orjson.loads(raised.value.body)["message"]
    assert raised.value.status == 422, message
    assert field in message, message
    # `streamflow render` refuses it too: a CEL rule in the same words, a bound on the same field.
    with pytest.raises(ValueError, match=r".") as refused:
        render_offline(yaml.safe_dump(body))
    for problem in str(refused.value).split("; "):
        where, _, what = problem.partition(": ")
        cel_message = what.partition('Invalid value: "object": ')[2]
        assert (cel_message or where) in message, (problem, message)


def test_metrics_and_liveness_are_served(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    import urllib.request  # noqa: PLC0415

    ns, kafka_ns, airflow_ns = namespaces
    kube.create(pipeline("metered", ns, kafka_ns, airflow_ns))
    wait_for(lambda: children_exist(kube, "metered", ns, kafka_ns), what="children")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5
    ) as live:
        assert live.status == 200
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    assert 'streamflow_reconciliations_total{result="ok"}' in text
    assert "streamflow_reconcile_duration_seconds_bucket" in text
    assert 'streamflow_pipelines{phase="Progressing"}' in text


def test_a_shadow_challenger_runs_beside_the_live_detector_and_goes_away(
    operator: Operator, kube: Kube, namespaces: tuple[str, str, str]
) -> None:
    """spec.shadow: the fraud-detector mounts and runs the challenger (rules overlaid on the
    live ones, the built-in model), its topic is declared, the status says what runs; removing
    it upgrades the fraud-detector without it and prunes the topic."""
    ns, kafka_ns, airflow_ns = namespaces
    shadow = {"rules": {"version": "candidate", "alertThreshold": 0.6}, "model": {}}
    kube.create(pipeline("challenged", ns, kafka_ns, airflow_ns, shadow=shadow))
    shadow_topic = f"{ns}-challenged-shadow"
    wait_for(lambda: kube.get(*TOPIC, shadow_topic, kafka_ns), what="the shadow topic")
    fp = make_ready(kube, "challenged", ns, kafka_ns)
    assert fp["status"]["topicsReady"] == "6/6"
    assert fp["status"]["shadowRulesVersion"].startswith("candidate+")
    assert fp["status"]["shadowModelVersion"] == builtin_model().version

    def detector() -> dict[str, Any]:
        return kube.get(*FLINK, "challenged-fraud-detector", ns) or {}

    args = detector()["spec"]["job"]["args"]
    assert args[args.index("--shadow-topic") + 1] == f"streamflow.{ns}.challenged.shadow"
    volumes = {v["name"]: v for v in detector()["spec"]["podTemplate"]["spec"]["volumes"]}
    shadow_rules = kube.get("v1", "ConfigMap", volumes["shadow-rules"]["configMap"]["name"], ns)
    assert shadow_rules is not None
    text = shadow_rules["data"]["rules.yaml"]
    assert "alert_threshold: 0.6" in text and "C00028" in text  # overlay: the live blacklist
    for job in ("challenged-transaction-processor", "challenged-realtime-aggregator"):
        assert "shadow" not in orjson.dumps(kube.get(*FLINK, job, ns)).decode()

    kube.patch(*FP, "challenged", ns, {"spec": {"shadow": None}})
    wait_for(lambda: "--shadow-topic" not in detector()["spec"]["job"]["args"],
             what="the fraud-detector without the shadow")  # fmt: skip
    wait_for(lambda: kube.get(*TOPIC, shadow_topic, kafka_ns) is None, what="shadow topic pruned")
    simulate_flink(kube, "challenged", ns)

    def ready() -> dict[str, Any] | None:
        f = kube.get(*FP, "challenged", ns)
        return f if condition(f, "Ready").get("status") == "True" else None

    fp = wait_for(ready, what="Ready without the shadow")
    assert "shadowRulesVersion" not in fp["status"] and fp["status"]["topicsReady"] == "5/5"
