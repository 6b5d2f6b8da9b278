"""Prometheus metrics of the operator (served on STREAMFLOW_METRICS_PORT, default 8080)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILIATIONS = Counter("streamflow_reconciliations_total", "Reconciliation passes", ["result"])
ERRORS = Counter("streamflow_reconcile_errors_total", "Children that failed to apply", ["kind"])
DURATION = Histogram(
    "streamflow_reconcile_duration_seconds",
    "Duration of a reconciliation pass",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PIPELINES = Gauge("streamflow_pipelines", "FraudPipelines by phase", ["phase"])
QUEUE_DEPTH = Gauge("streamflow_queue_depth", "Pipelines waiting for a reconciliation pass")
IN_PROGRESS = Gauge("streamflow_passes_in_progress", "Reconciliation passes running now")
API_REQUESTS = Counter(
    "streamflow_api_requests_total", "Requests the operator sent", ["verb", "kind", "code"]
)
API_WRITES = Counter("streamflow_api_writes_total", "Writes the operator sent", ["verb", "kind"])
API_ERRORS = Counter(
    "streamflow_api_errors_total",
    "Failed requests (reason: HTTP status, or unreachable)",
    ["reason"],
)
EVENTS = Counter("streamflow_events_total", "Events posted", ["type", "reason"])
# The model a pipeline's fraud-detector runs, and since when: the creation time of the verified,
# content-addressed copy the operator published for it (a new model is a new copy). Its age is
# the model's staleness (config/monitoring/, ADR 0044); the artifact itself carries no date.
MODEL_LIVE_SINCE = Gauge(
    "streamflow_model_live_since_timestamp_seconds",
    "When the pipeline's live model was first published (Unix seconds)",
    ["namespace", "pipeline", "model_version"],
)

PHASES = ("Ready", "Progressing", "Upgrading", "Suspended", "Stalled", "Terminating")
_phases: dict[str, str] = {}


def record_phase(key: str, phase: str | None) -> None:
    """Track each pipeline's phase (None when deleted) and publish the counts."""
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    counts = dict.fromkeys(PHASES, 0)
    for p in _phases.values():
        counts[p] = counts.get(p, 0) + 1
    for p, n in counts.items():
        PIPELINES.labels(phase=p).set(n)


_models: dict[tuple[str, str], tuple[str, str, str]] = {}


def live_since(children: Iterable[dict[str, Any]], config_map: str | None) -> float | None:
    """The creation time (Unix seconds) of the ConfigMap ``config_map`` among ``children``,
    None when it is not there (yet) or carries no creationTimestamp."""
    for child in children:
        md = child.get("metadata") or {}
        if child.get("kind") == "ConfigMap" and md.get("name") == config_map:
            created = md.get("creationTimestamp")
            if isinstance(created, str):
                return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return None


def record_model(namespace: str, pipeline: str, version: str | None, since: float | None) -> None:
    """Publish the pipeline's live model (version None: none runs, or the pipeline is gone;
    since None: its ConfigMap not seen yet, what was published stays): one series per
    pipeline, the previous model's removed."""
    key = (namespace, pipeline)
    previous = _models.get(key)
    if version is None:
        if previous is not None:
            MODEL_LIVE_SINCE.remove(*previous)
            del _models[key]
        return
    if since is None:
        return
    labels = (namespace, pipeline, version)
    if previous is not None and previous != labels:
        MODEL_LIVE_SINCE.remove(*previous)
    MODEL_LIVE_SINCE.labels(*labels).set(since)
    _models[key] = labels
