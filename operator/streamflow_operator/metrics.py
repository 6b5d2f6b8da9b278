"""Prometheus metrics of the operator (served on STREAMFLOW_METRICS_PORT, default 8080)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILIATIONS = Counter("streamflow_reconciliations_total", "Reconciliation passes", ["result"])
ERRORS = Counter("streamflow_reconcile_errors_total", "Children that failed to apply", ["kind"])
DURATION = Histogram(
    "streamflow_reconcile_duration_seconds",
    "Duration of a reconciliation pass",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PIPELINES = Gauge("streamflow_pipelines", "FraudPipelines by phase", ["phase"])

_phases: dict[str, str] = {}


def record_phase(key: str, phase: str | None) -> None:
    """Track each pipeline's phase (None when deleted) and publish the counts."""
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    for p in ("Ready", "Progressing", "Upgrading", "Suspended", "Stalled"):
        PIPELINES.labels(phase=p).set(sum(1 for v in _phases.values() if v == p))
