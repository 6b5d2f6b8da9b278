"""Prometheus metrics of the operator (served on STREAMFLOW_METRICS_PORT, default 8080)."""

from __future__ import annotations

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
