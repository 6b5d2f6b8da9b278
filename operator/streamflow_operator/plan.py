"""Planning: pure decisions from what is wanted and what is observed (no I/O, table-tested).

- :func:`decide`: for one wanted child, create / apply / keep, or refuse (not ours) or wait.
- :func:`job_gates`: which jobs may run (their own dependencies ready, or already running).
- :func:`prunable`: children proven ours that the pipeline no longer wants, sparing the
  ConfigMaps a FlinkDeployment still mounts or may roll back to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from streamflow_operator.children import describe, is_ours, key_of
from streamflow_operator.render import Manifest, Meta, checksum
from streamflow_operator.render.flink import JOB_DEFS, deployment_name, job_spec
from streamflow_operator.render.kafka import kafka_namespace, resource_name
from streamflow_operator.render.postgres import cluster_name, database_name, migrations_job_name
from streamflow_operator.spec import FraudPipelineSpec

Action = Literal["create", "apply", "keep", "conflict", "wait"]


@dataclass(frozen=True)
class Applied:
    """Our last write to a child: what we rendered and how the object looked right after."""

    rendered: str
    live: str


@dataclass(frozen=True)
class Decision:
    action: Action
    repair: bool = False  # the child was changed or deleted by someone else since our write


def fingerprint(live: Manifest, wanted: Manifest) -> str:
    """What of the live object a write by someone else would change: its generation (spec) or,
    for kinds without one, its resourceVersion; and the labels, annotations and owner
    references we set. A status update by the child's own controller changes none of it."""
    md, want = live.get("metadata") or {}, wanted["metadata"]
    labels, annotations = md.get("labels") or {}, md.get("annotations") or {}
    return checksum(
        [
            md.get("generation") or md.get("resourceVersion"),
            {k: labels.get(k) for k in want.get("labels") or {}},
            {k: annotations.get(k) for k in want.get("annotations") or {}},
            [r.get("uid") for r in md.get("ownerReferences") or []],
        ]
    )


def decide(
    wanted: Manifest, live: Manifest | None, applied: Applied | None, meta: Meta
) -> Decision:
    if live is None:
        return Decision("create", repair=applied is not None)
    if not is_ours(live, meta.uid, meta.namespace):
        return Decision("conflict")
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return Decision("wait")  # recreated once it is gone
    rendered = checksum(wanted)
    if applied is not None and applied == Applied(rendered, fingerprint(live, wanted)):
        return Decision("keep")
    return Decision("apply", repair=applied is not None and applied.rendered == rendered)


def job_gates(
    spec: FraudPipelineSpec,
    meta: Meta,
    live: Mapping[str, Manifest],
    ready: Mapping[str, bool],
    messages: Mapping[str, str],
) -> dict[str, list[str]]:
    """job -> what it still waits for ([] = it may run). ``live`` and ``ready`` are by child
    key. A job that runs keeps running through a later hiccup of a dependency."""
    ns = meta.namespace
    gates: dict[str, list[str]] = {}
    for job in JOB_DEFS:
        if not job_spec(spec, job.name).enabled:
            continue
        fd = live.get(f"FlinkDeployment/{ns}/{deployment_name(meta, job.name)}")
        if fd is not None and (fd.get("spec") or {}).get("job", {}).get("state") == "running":
            gates[job.name] = []
            continue
        needed = [
            f"KafkaTopic/{kafka_namespace(spec, meta)}/{resource_name(meta, t)}" for t in job.topics
        ]
        if job.database:
            if spec.postgres.create:
                needed.append(f"Cluster/{ns}/{cluster_name(spec, meta)}")
            needed += [
                f"Database/{ns}/{database_name(meta)}",
                f"Job/{ns}/{migrations_job_name(spec, meta)}",
            ]
        waits = [
            messages.get(k) or f"{describe(k)} not created yet" for k in needed if not ready.get(k)
        ]
        if job.model and meta.model is None:
            waits.append("a valid model")
        gates[job.name] = waits
    return gates


def prunable(
    owned: Iterable[Manifest], wanted: set[str], meta: Meta, spared: set[str]
) -> list[Manifest]:
    """Children proven ours that are not wanted any more (in any namespace), except the
    ConfigMaps in ``spared`` (mounted by a FlinkDeployment, now or for a rollback)."""
    out = []
    for obj in owned:
        key = key_of(obj)
        if key in wanted or not is_ours(obj, meta.uid, meta.namespace):
            continue
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] in spared:
            continue
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            continue  # already going
        out.append(obj)
    return out
