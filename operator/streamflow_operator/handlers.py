"""kopf wiring only: watches feed the cache and the work queue; workers run reconcile.py.

Every watched event of a child (or of an object a pipeline reads: its model ConfigMap, CNPG's app
secret) enqueues the pipelines it concerns, as controller-runtime's ``Owns()`` does, so a
child's status change reaches the pipeline's status in well under a second. A slow resync
(STREAMFLOW_RESYNC_SECONDS, default 300) is only a safety net. kopf's change handlers (and their
last-handled-configuration annotation) are not used: the queue and the finalizer are ours.
Run with:

    kopf run -m streamflow_operator.handlers --all-namespaces --standalone \\
        --liveness=http://0.0.0.0:8081/healthz

Readiness (``/readyz``) and the metrics (``/metrics``) are served on STREAMFLOW_METRICS_PORT
(default 8080; health.py says what ready means).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
from typing import Any

import kopf

from streamflow_operator import health, metrics
from streamflow_operator.children import KINDS, WATCH_SELECTOR, key_of, slim
from streamflow_operator.health import Readiness
from streamflow_operator.kube import ApiError, Kube
from streamflow_operator.reconcile import Reconciler
from streamflow_operator.runtime import PipelineKey, WorkQueue, run_workers
from streamflow_operator.spec import GROUP, PLURAL, VERSION

RESYNC_SECONDS = float(os.environ.get("STREAMFLOW_RESYNC_SECONDS", "300"))
WORKERS = int(os.environ.get("STREAMFLOW_WORKERS", "16"))
DELETION_TIMEOUT = float(os.environ.get("STREAMFLOW_DELETION_TIMEOUT_SECONDS", "600"))
# CloudNativePG labels the app secrets it writes so (pkg/specs/secrets.go); the operator reads
# their `uri` to build the Airflow connection.
APP_SECRET_SELECTOR = "cnpg.io/userType=app"
log = logging.getLogger("streamflow.operator")


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    settings.posting.reporting_component = "streamflow-operator"
    settings.posting.level = logging.WARNING
    # kopf's own requests (its watches) keep retrying through an apiserver outage instead of
    # giving up after ~1 minute; each failure is one log line.
    settings.networking.error_backoffs = [1, 1, 2, 3, 5] + [5] * 720
    settings.watching.reconnect_backoff = 1.0
    for kind in KINDS:
        if kind.watched:
            settings.watching.label_selectors[kind.group, kind.plural] = WATCH_SELECTOR
    settings.watching.label_selectors["", "secrets"] = APP_SECRET_SELECTOR
    for noisy in ("kopf.objects", "kopf.activities.startup"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf's own requests (the watches) report each failed attempt as one log record: count
    # them with the operator's (an idle operator in an outage fails only there).
    kube = Kube(lambda: kopf.login_via_client(logger=logger, settings=settings))
    readiness = Readiness(apiserver_down_since=lambda: kube.down_since)
    logging.getLogger("kopf._cogs.clients").addHandler(_CountFailures(readiness))
    # Served from the start: /readyz says 503 until the cache is filled.
    port = int(os.environ.get("STREAMFLOW_METRICS_PORT", "8080"))
    memo.http = await health.serve(readiness, port) if port else None
    reconciler = Reconciler(kube, deletion_timeout=DELETION_TIMEOUT)
    queue = WorkQueue()
    memo.reconciler, memo.queue = reconciler, queue
    await _prefill(reconciler)
    readiness.cache_filled = True

    async def work(key: PipelineKey) -> None:
        result = await reconciler.reconcile(key)
        if result.failed:
            queue.backoff(key)
        else:
            queue.forget(key)
        if result.requeue_after is not None:
            queue.add_after(key, result.requeue_after)

    memo.tasks = [
        asyncio.create_task(run_workers(queue, WORKERS, work), name="streamflow-workers"),
        asyncio.create_task(_resync(reconciler, queue), name="streamflow-resync"),
    ]
    readiness.tasks = memo.tasks


async def _prefill(reconciler: Reconciler) -> None:
    """The cache is filled before the first pass (kopf's own listing follows as events). An
    apiserver that is starting (429, 5xx, unreachable) is waited for, one line per attempt."""
    delay = 0.5
    while True:
        try:
            for kind in KINDS:
                if kind.watched:
                    for obj in await reconciler.kube.list(kind, WATCH_SELECTOR):
                        reconciler.store.put(slim(obj))
            for secret in await reconciler.kube.list(_SECRET, APP_SECRET_SELECTOR):
                _record_app_secret(reconciler, secret)
            await reconciler.list_secrets()
            return
        except ApiError as exc:
            if not exc.transient:
                raise
            log.warning("filling the cache: %s; again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


class _CountFailures(logging.Handler):
    def __init__(self, readiness: Readiness) -> None:
        super().__init__(level=logging.WARNING)
        self.readiness = readiness

    def emit(self, record: logging.LogRecord) -> None:
        metrics.API_ERRORS.labels(reason="watch").inc()
        self.readiness.watch_failed()


async def _resync(reconciler: Reconciler, queue: WorkQueue) -> None:
    """The safety net, every RESYNC_SECONDS: the listed Secrets refreshed; children deleted
    while a watch was down (a relist reports no deletion) dropped from the cache, by one
    metadata-only list per kind; every pipeline passed over again (from the cache: a pass with
    nothing to do sends nothing)."""
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        with contextlib.suppress(ApiError):
            await reconciler.list_secrets()
            for kind in KINDS:
                if not kind.watched:
                    continue
                version, present = await reconciler.kube.list_metadata(kind, WATCH_SELECTOR)
                for obj in reconciler.store.missing(kind.kind, present, version):
                    reconciler.store.remove(key_of(obj))
        for key in list(reconciler.pipelines):
            queue.add(key)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "tasks", []):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*getattr(memo, "tasks", []), return_exceptions=True)
    if hasattr(memo, "reconciler"):
        await memo.reconciler.kube.close()
    if getattr(memo, "http", None) is not None:
        await memo.http.cleanup()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def pipeline_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if type == "DELETED":
        memo.reconciler.pipeline_gone(key)
        memo.queue.drop(key)
        return
    copy = {k: _plain(body.get(k)) for k in ("apiVersion", "kind", "metadata", "spec", "status")}
    if memo.reconciler.pipeline_changed(copy):
        memo.queue.add(key)


async def child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    obj = slim(_plain(body))
    if type == "DELETED":
        memo.reconciler.store.remove(key_of(obj))
    elif not memo.reconciler.store.put(obj):
        return  # the echo of our own write
    for key in memo.reconciler.affected(obj):
        memo.queue.add(key)


for _kind in KINDS:
    if _kind.watched:
        kopf.on.event(_kind.group, _kind.version, _kind.plural, id=f"watch-{_kind.plural}")(
            child_event
        )
_SECRET = next(k for k in KINDS if k.kind == "Secret")


def _record_app_secret(reconciler: Reconciler, secret: dict[str, Any], gone: bool = False) -> None:
    md = secret["metadata"]
    target = (md["namespace"], md["name"])
    uri = (secret.get("data") or {}).get("uri")
    try:
        decoded = None if gone or uri is None else base64.b64decode(uri).decode()
    except (binascii.Error, UnicodeDecodeError):
        log.warning("Secret %s/%s: key uri is not base64 text; ignored", *target)
        decoded = None
    if decoded is None:
        reconciler.app_secrets.pop(target, None)
    else:
        reconciler.app_secrets[target] = decoded


@kopf.on.event("", "v1", "secrets", id="watch-app-secrets")
async def app_secret_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    secret = _plain(body)
    secret["kind"] = "Secret"
    _record_app_secret(memo.reconciler, secret, gone=type == "DELETED")
    for key in memo.reconciler.affected(secret):
        memo.queue.add(key)


def _plain(value: Any) -> Any:
    """kopf's bodies are live views: keep a plain copy."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
