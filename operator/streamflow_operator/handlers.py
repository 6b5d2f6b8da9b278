"""kopf wiring only: every handler calls reconcile -> status; no logic of its own.

One reconcile() serves resume, create, update and a timer, as kopf's own docs recommend for
level-triggered behaviour: the timer re-observes the children, so drift and children's status
changes are picked up without watching every child kind. Run with:

    kopf run -m streamflow_operator.handlers --all-namespaces --liveness=http://0.0.0.0:8081/healthz
"""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any

import kopf

from streamflow_operator import metrics
from streamflow_operator.reconcile import Reconciler, SpecError
from streamflow_operator.render import LABEL_PIPELINE
from streamflow_operator.spec import GROUP, PLURAL, VERSION
from streamflow_operator.status import build_status

RESYNC_SECONDS = float(os.environ.get("STREAMFLOW_RESYNC_SECONDS", "10"))
RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    from kubernetes import client, config  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    # kopf's bookkeeping lives in annotations under our prefix, never in status.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = int(os.environ.get("STREAMFLOW_WORKERS", "16"))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    memo.reconciler = Reconciler(client.ApiClient())
    port = int(os.environ.get("STREAMFLOW_METRICS_PORT", "8080"))
    if port:
        start_http_server(port)


def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    indexes: dict[str, Any] | None = None,
    prune: bool = True,
) -> None:
    started = time.perf_counter()
    old = dict(body.get("status") or {})
    generation = body["metadata"].get("generation", 0)
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    try:
        observation = memo.reconciler.reconcile(
            dict(body), prune=prune, cache=_children_cache(body, indexes)
        )
    except SpecError as exc:
        metrics.RECONCILIATIONS.labels(result="invalid").inc()
        metrics.record_phase(key, "Stalled")
        patch.status.update(_invalid_status(str(exc), generation, old))
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    status, events = build_status(observation, old, generation)
    for kind in observation.apply_errors:
        metrics.ERRORS.labels(kind=kind.split("/", 1)[0]).inc()
    for event_type, reason, message in events:
        kopf.event(body, type=event_type, reason=reason, message=message[:1000])
    if status != old:
        patch.status.update(status)
    metrics.record_phase(key, status["phase"])
    metrics.DURATION.observe(time.perf_counter() - started)
    transient = {
        k: v for k, v in observation.apply_errors.items() if k not in observation.permanent_errors
    }
    metrics.RECONCILIATIONS.labels(result="retry" if transient else "ok").inc()
    if transient:
        raise kopf.TemporaryError(
            f"{len(transient)} children failed to apply: {next(iter(transient.values()))}", delay=5
        )


def _invalid_status(message: str, generation: int, old: dict[str, Any]) -> dict[str, Any]:
    condition = {
        "type": "Stalled",
        "status": "True",
        "reason": "InvalidSpec",
        "message": message,
        "observedGeneration": generation,
    }
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidSpec",
        "message": message,
        "observedGeneration": generation,
    }
    return {
        **old,
        "observedGeneration": generation,
        "phase": "Stalled",
        "conditions": [ready, condition],
    }


# ---- the children cache: kopf indexes fed by watches (an informer cache) --------------------
# Only the kinds whose status we read, plus ConfigMaps (metadata only: the model is large).
def _essence(body: kopf.Body, metadata_only: bool = False) -> dict[str, Any]:
    keep = (
        ("apiVersion", "kind", "metadata")
        if metadata_only
        else ("apiVersion", "kind", "metadata", "spec", "status")
    )
    return {k: copy.deepcopy(body[k]) for k in keep if k in body}


_CHILD_LABELS = {LABEL_PIPELINE: kopf.PRESENT}


def _index_full(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {labels[LABEL_PIPELINE]: _essence(body)}


def _index_metadata(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {labels[LABEL_PIPELINE]: _essence(body, metadata_only=True)}


# index id (the kwarg kopf injects into handlers) -> the watched kind, and whether only its
# metadata is kept (ConfigMaps: the model is large and has no status to read).
_INDEXED_KINDS = {
    "topics_idx": ("kafka.strimzi.io", "v1", "kafkatopics", False),
    "flink_idx": ("flink.apache.org", "v1beta1", "flinkdeployments", False),
    "clusters_idx": ("postgresql.cnpg.io", "v1", "clusters", False),
    "databases_idx": ("postgresql.cnpg.io", "v1", "databases", False),
    "jobs_idx": ("batch", "v1", "jobs", False),
    "configmaps_idx": ("", "v1", "configmaps", True),
}
for _id, (_group, _version, _plural, _metadata_only) in _INDEXED_KINDS.items():
    kopf.index(_group, _version, _plural, id=_id, labels=_CHILD_LABELS)(
        _index_metadata if _metadata_only else _index_full
    )
_INDEXES = tuple(_INDEXED_KINDS)


def _children_cache(body: kopf.Body, indexes: dict[str, Any] | None) -> dict[str, Any] | None:
    if not indexes:
        return None
    label = f"{body['metadata']['namespace']}.{body['metadata']['name']}"
    cache = {}
    for index in indexes.values():
        for obj in index.get(label, []):
            md = obj["metadata"]
            cache[f"{obj['kind']}/{md.get('namespace', '')}/{md['name']}"] = obj
    return cache


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE, retries=20, backoff=2)
@kopf.on.update(*RESOURCE, field="spec", retries=20, backoff=2)
def reconcile(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    # A new pipeline has no leftovers to prune; an update or a restart may.
    _reconcile(body, patch, memo, logger, prune=kwargs.get("reason") != "create")


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Re-observe: restores drifted or deleted children and follows their status. Cheap when
    nothing changed: children are read from the watch-fed cache, not from the apiserver."""
    try:
        indexes = {name: kwargs[name] for name in _INDEXES if name in kwargs}
        _reconcile(body, patch, memo, logger, indexes=indexes, prune=False)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        logger.info("resync: %s", exc)


@kopf.on.delete(*RESOURCE)
def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Children in other namespaces have no ownerReference: delete them before we let go."""
    deleted = memo.reconciler.delete_cross_namespace(dict(body))
    metrics.record_phase(f"{body['metadata']['namespace']}/{body['metadata']['name']}", None)
    if deleted:
        logger.info("deleted cross-namespace children: %s", ", ".join(deleted))
