"""Planning, ownership and the work queue: pure, table-driven, no cluster."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamflow_operator.children import BY_KIND, KINDS, is_ours, mounted_config_maps, slim
from streamflow_operator.plan import Applied, decide, fingerprint, job_gates, prunable
from streamflow_operator.reconcile import parse_spec
from streamflow_operator.render import Meta, PublishedModel, checksum, render_all
from streamflow_operator.runtime import Store, WorkQueue

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = yaml.safe_load((ROOT / "config/samples/fraudpipeline.yaml").read_text())
MODEL = PublishedModel("payments-model-0123456789", "m1", "sha256:0123456789", b"{}")
META = Meta("payments", "fraud", uid="u-1", model=MODEL)
SPEC = parse_spec(SAMPLE["spec"])
CHILDREN = {c["metadata"]["name"]: c for c in render_all(SPEC, META)}
TOPIC = CHILDREN["fraud-payments-alerts"]  # in namespace kafka: no ownerReference
FLINK = CHILDREN["payments-fraud-detector"]


def live(manifest: dict[str, Any], generation: int = 1, **metadata: Any) -> dict[str, Any]:
    """The object as the apiserver returns it after our write."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(uid="c-1", resourceVersion="10", generation=generation, **metadata)
    return obj


def recorded(manifest: dict[str, Any], obj: dict[str, Any]) -> Applied:
    return Applied(checksum(manifest), fingerprint(obj, manifest))


def foreign(manifest: dict[str, Any]) -> dict[str, Any]:
    md = manifest["metadata"]
    return {
        "kind": manifest["kind"],
        "metadata": {"name": md["name"], "namespace": md["namespace"]},
    }


def relabelled(obj: dict[str, Any], **labels: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["labels"].update(labels)
    return out


def without_owner(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].pop("ownerReferences")
    return out


# (reason, wanted, live, applied record, want action, want repair)
DECISIONS: list[tuple[str, dict[str, Any], Any, Any, str, bool]] = [
    ("new child", TOPIC, None, None, "create", False),
    ("deleted by someone", TOPIC, None, recorded(TOPIC, live(TOPIC)), "create", True),
    ("someone else's object", TOPIC, foreign(TOPIC), None, "conflict", False),
    (
        "our labels, another pipeline's uid",
        TOPIC,
        relabelled(live(TOPIC), **{"streamflow.dev/pipeline-uid": "u-2"}),
        None,
        "conflict",
        False,
    ),
    (
        "same namespace without our ownerReference",
        FLINK,
        without_owner(live(FLINK)),
        None,
        "conflict",
        False,
    ),
    ("unchanged since our write", TOPIC, live(TOPIC), recorded(TOPIC, live(TOPIC)), "keep", False),
    (
        "a status update only",
        TOPIC,
        {**live(TOPIC), "status": {"conditions": []}},
        recorded(TOPIC, live(TOPIC)),
        "keep",
        False,
    ),
    (
        "someone else's label is kept, not fought",
        TOPIC,
        relabelled(live(TOPIC), team="x"),
        recorded(TOPIC, live(TOPIC)),
        "keep",
        False,
    ),
    (
        "spec edited by someone (generation moved)",
        TOPIC,
        live(TOPIC, generation=2),
        recorded(TOPIC, live(TOPIC)),
        "apply",
        True,
    ),
    (
        "our label changed by someone",
        TOPIC,
        relabelled(live(TOPIC), **{"app.kubernetes.io/component": "x"}),
        recorded(TOPIC, live(TOPIC)),
        "apply",
        True,
    ),
    (
        "our rendering changed",
        CHILDREN["fraud-payments-metrics"],
        live(TOPIC),
        recorded(TOPIC, live(TOPIC)),
        "apply",
        False,
    ),
    ("ours, after a restart (no record)", TOPIC, live(TOPIC), None, "apply", False),
    (
        "ours and being deleted",
        TOPIC,
        live(TOPIC, deletionTimestamp="2026-01-01T00:00:00Z"),
        None,
        "wait",
        False,
    ),
]


@pytest.mark.parametrize(
    ("reason", "wanted", "current", "applied", "action", "repair"),
    DECISIONS,
    ids=[d[0] for d in DECISIONS],
)
def test_decide(
    reason: str,
    wanted: dict[str, Any],
    current: Any,
    applied: Any,
    action: str,
    repair: bool,
) -> None:
    decision = decide(wanted, current, applied, META)
    assert (decision.action, decision.repair) == (action, repair), reason


def test_ownership_needs_the_uid_and_in_the_same_namespace_the_controller_reference() -> None:
    assert is_ours(live(FLINK), "u-1", "fraud")
    assert is_ours(live(TOPIC), "u-1", "fraud")  # another namespace: the uid label suffices
    assert not is_ours(live(TOPIC), "", "fraud")
    assert not is_ours(without_owner(live(FLINK)), "u-1", "fraud")
    assert not is_ours(relabelled(live(TOPIC), **{"app.kubernetes.io/managed-by": "x"}), "u-1", "x")


def _ready_all(spec_children: dict[str, dict[str, Any]]) -> dict[str, bool]:
    return {
        f"{c['kind']}/{c['metadata']['namespace']}/{c['metadata']['name']}": True
        for c in spec_children.values()
    }


def test_each_job_waits_only_for_its_own_dependencies() -> None:
    ready = _ready_all(CHILDREN)
    database = next(k for k in ready if k.startswith("Database/"))
    metrics_topic = next(k for k in ready if k.endswith("-metrics"))
    gates = job_gates(SPEC, META, {}, {**ready, database: False}, {database: "db not applied"})
    assert gates["realtime-aggregator"] == []
    assert gates["transaction-processor"] == gates["fraud-detector"] == ["db not applied"]
    gates = job_gates(SPEC, META, {}, {**ready, metrics_topic: False}, {})
    assert gates["realtime-aggregator"] and not gates["fraud-detector"]


def test_a_running_job_keeps_running_and_a_job_without_model_waits() -> None:
    key = "FlinkDeployment/fraud/payments-fraud-detector"
    running = {key: {"spec": {"job": {"state": "running"}}}}
    assert job_gates(SPEC, META, running, {}, {})["fraud-detector"] == []
    no_model = Meta("payments", "fraud", uid="u-1")
    assert (
        "a valid model" in job_gates(SPEC, no_model, {}, _ready_all(CHILDREN), {})["fraud-detector"]
    )


def test_pruning_takes_only_ours_and_spares_what_flink_may_mount() -> None:
    old_rules = live(CHILDREN[next(n for n in CHILDREN if n.startswith("payments-rules-"))])
    old_rules["metadata"]["name"] = "payments-rules-old"
    old_model = live(CHILDREN[MODEL.config_map])
    old_model["metadata"]["name"] = "payments-model-old"
    theirs = foreign(TOPIC)
    old_topic = live(TOPIC)
    old_topic["metadata"]["namespace"] = "kafka-before"  # the topics moved namespace
    wanted = {f"{c['kind']}/{c['metadata']['namespace']}/{n}" for n, c in CHILDREN.items()}
    pruned = prunable(
        [old_rules, old_model, theirs, old_topic, live(TOPIC)],
        wanted,
        META,
        spared={"payments-model-old"},
    )
    assert [p["metadata"]["name"] for p in pruned] == [
        "payments-rules-old",
        "fraud-payments-alerts",
    ]


def test_mounted_config_maps_include_the_rollback_spec() -> None:
    fd = copy.deepcopy(FLINK)
    old_spec = copy.deepcopy(FLINK["spec"])
    old_spec["podTemplate"]["spec"]["volumes"][1]["configMap"]["name"] = "payments-model-prev"
    import orjson  # noqa: PLC0415

    fd["status"] = {"reconciliationStatus": {"lastStableSpec": orjson.dumps(old_spec).decode()}}
    assert "payments-model-prev" in mounted_config_maps(fd)
    assert MODEL.config_map in mounted_config_maps(fd)
    small = slim(fd)
    assert "reconciliationStatus" not in small.get("status", {})
    assert "payments-model-prev" not in small["mountsNow"]


def test_slim_drops_payloads_and_flags_fields_a_create_left_to_an_update_manager() -> None:
    cm = live(CHILDREN[MODEL.config_map])
    cm["metadata"]["managedFields"] = [{"manager": "streamflow-operator", "operation": "Update"}]
    small = slim(cm)
    assert "data" not in small and small["updateManaged"] is True


def test_the_store_ignores_a_stale_echo_and_indexes_by_owner() -> None:
    store = Store()
    new = live(TOPIC)
    new["metadata"]["resourceVersion"] = "12"
    store.put(new)
    stale = live(TOPIC)  # resourceVersion 10: the watch event of an earlier write
    store.put(stale)
    key = "KafkaTopic/kafka/fraud-payments-alerts"
    assert store.get(key) is new and [o["metadata"]["name"] for o in store.owned("u-1")] == [
        "fraud-payments-alerts"
    ]
    store.remove(key)
    assert store.owned("u-1") == []


def test_the_registry_gives_rest_paths() -> None:
    assert BY_KIND["ConfigMap"].path("ns", "x") == "/api/v1/namespaces/ns/configmaps/x"
    assert BY_KIND["KafkaTopic"].path(None) == "/apis/kafka.strimzi.io/v1/kafkatopics"
    assert {k.kind for k in KINDS} == {
        "ConfigMap",
        "Secret",
        "Cluster",
        "Database",
        "Job",
        "KafkaTopic",
        "FlinkDeployment",
    }


def test_the_work_queue_dedupes_and_never_runs_a_key_twice_at_once() -> None:
    async def scenario() -> list[tuple[str, str]]:
        queue = WorkQueue()
        a, b = ("ns", "a"), ("ns", "b")
        queue.add(a)
        queue.add(a)
        queue.add(b)
        assert len(queue) == 2
        first = await queue.get()
        queue.add(first)  # during its pass: not queued twice, re-queued when done
        assert len(queue) == 1
        second = await queue.get()
        queue.done(first)
        third = await queue.get()
        queue.done(second)
        queue.done(third)
        return [first, second, third]

    assert asyncio.run(scenario()) == [("ns", "a"), ("ns", "b"), ("ns", "a")]


def test_backoff_grows_and_is_capped() -> None:
    async def scenario() -> list[float]:
        queue = WorkQueue()
        delays = [queue.backoff(("ns", "a"), cap=2.0) for _ in range(6)]
        queue.drop(("ns", "a"))
        return delays

    assert asyncio.run(scenario()) == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_list_finds_what_was_deleted_while_the_watch_was_down() -> None:
    store = Store()
    kept, deleted, newer = live(TOPIC), live(TOPIC), live(TOPIC)
    deleted["metadata"]["name"] = "gone"
    newer["metadata"].update(name="new", resourceVersion="30")  # written after the list
    for obj in (kept, deleted, newer):
        store.put(obj)
    missing = store.missing("KafkaTopic", {"kafka/fraud-payments-alerts"}, list_version="20")
    assert [o["metadata"]["name"] for o in missing] == ["gone"]
