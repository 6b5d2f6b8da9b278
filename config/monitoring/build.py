"""Writes config/monitoring/'s generated files: `make monitoring` (a test fails when they drift).

- prometheusrule.yaml: the groups of streamflow.rules.yaml (the file promtool checks and tests)
  wrapped in a Prometheus Operator PrometheusRule;
- dashboards/*.json: the Grafana dashboards, built here from a few panel helpers so that every
  panel has the same datasource and namespace variables.

Every metric a rule or panel queries exists in the code or in Flink's documented metrics
(tests/test_monitoring_rules.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "streamflow.rules.yaml"
PROMETHEUS_RULE = HERE / "prometheusrule.yaml"
DASHBOARDS = HERE / "dashboards"
FLINK = "flink_taskmanager_job_task_operator_streamflow_"
NS = 'namespace=~"$namespace"'
FD = f'{NS}, job_name="streamflow_fraud_detector"'
TXNS = 'table_name="transactions"'


def prometheus_rule() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streamflow",
            "labels": {
                "app.kubernetes.io/name": "streamflow",
                "app.kubernetes.io/part-of": "streamflow",
            },
        },
        "spec": {"groups": groups},
    }
    header = "# Generated from streamflow.rules.yaml by `make monitoring`: edit that file.\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, width=100)


def target(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def panel(title: str, unit: str, *targets: dict[str, Any], kind: str = "timeseries",
          description: str = "") -> dict[str, Any]:  # fmt: skip
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def dashboard(uid: str, title: str, description: str, rows: list[list[dict[str, Any]]],
              namespaced: bool = True) -> dict[str, Any]:  # fmt: skip
    """Panels laid out row by row (each row's panels share the 24 columns)."""
    panels, y = [], 0
    for row in rows:
        width = 24 // len(row)
        for i, p in enumerate(row):
            panels.append(
                {
                    **p,
                    "id": len(panels) + 1,
                    "gridPos": {"h": 8, "w": width, "x": i * width, "y": y},
                }
            )
        y += 8
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if namespaced:
        variables.append(
            {
                "name": "namespace",
                "type": "query",
                "label": "Namespace",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": f"label_values({FLINK}events_in, namespace)", "refId": "ns"},
                "definition": f"label_values({FLINK}events_in, namespace)",
                "includeAll": True,
                "multi": True,
                "refresh": 2,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamflow"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def pipeline_overview() -> dict[str, Any]:
    return dashboard(
        "streamflow-pipeline",
        "StreamFlow / Pipeline overview",
        "Kafka -> the three Flink jobs -> bronze -> silver/gold, per FraudPipeline namespace.",
        [
            [
                panel(
                    "Transactions in",
                    "reqps",
                    target(f"streamflow:transactions_in:rate5m{{{NS}}}", "{{namespace}}"),
                ),
                panel(
                    "Decisions",
                    "reqps",
                    target(f"streamflow:decisions:rate5m{{{NS}}}", "{{namespace}}"),
                ),
                panel(
                    "Dead letters by job",
                    "reqps",
                    target(
                        f"sum by (namespace, job_name) (rate({FLINK}dead_letters{{{NS}}}[5m]))",
                        "{{namespace}} {{job_name}}",
                    ),
                ),
            ],
            [
                panel(
                    "Consumer lag (records waiting in Kafka)",
                    "short",
                    target(
                        f"streamflow:consumer_lag:records{{{NS}}}", "{{namespace}} {{job_name}}"
                    ),
                    description="KafkaSource pendingRecords, summed over the job's subtasks.",
                ),
                panel(
                    "Bronze freshness",
                    "s",
                    target(
                        f"cnpg_streamflow_bronze_newest_age_seconds{{{NS}, {TXNS}}}",
                        "{{namespace}} newest transaction",
                    ),
                    description="Age of the newest bronze transaction (SLO: under 5 minutes while "
                    "traffic flows).",
                ),
                panel(
                    "Warehouse lag (silver, gold)",
                    "s",
                    target(
                        "max by (namespace, layer) "
                        f"(cnpg_streamflow_warehouse_lag_seconds{{{NS}}})",
                        "{{namespace}} {{layer}}",
                    ),
                    description="Age of the oldest transaction the layer has not taken in yet "
                    "(hourly builds).",
                ),
            ],
            [
                panel(
                    "Jobs running since",
                    "ms",
                    target(
                        f"max by (namespace, job_name) (flink_jobmanager_job_runningTime{{{NS}}})",
                        "{{namespace}} {{job_name}}",
                    ),
                    description="0: the job is not RUNNING.",
                ),
                panel(
                    "Job restarts (1h)",
                    "short",
                    target(
                        f"increase(flink_jobmanager_job_numRestarts{{{NS}}}[1h])",
                        "{{namespace}} {{job_name}}",
                    ),
                ),
                panel(
                    "Checkpoints",
                    "ms",
                    target(
                        "max by (namespace, job_name) "
                        f"(flink_jobmanager_job_lastCheckpointDuration{{{NS}}})",
                        "{{namespace}} {{job_name}} duration",
                    ),
                    target(
                        f"increase(flink_jobmanager_job_numberOfFailedCheckpoints{{{NS}}}[1h])",
                        "{{namespace}} {{job_name}} failed (1h)",
                    ),
                ),
            ],
            [
                panel(
                    "Transactions by schema version",
                    "reqps",
                    *(
                        target(
                            f"sum by (namespace) (rate({FLINK}{v}{{{NS}}}[5m]))",
                            f"{{{{namespace}}}} {v}",
                        )
                        for v in ("v1", "v2", "newer")
                    ),
                ),
                panel(
                    "Aggregator windows",
                    "reqps",
                    target(
                        f"sum by (namespace) (rate({FLINK}windows_emitted{{{NS}}}[5m]))",
                        "{{namespace}} emitted",
                    ),
                    target(
                        f"sum by (namespace) (rate({FLINK}late_events{{{NS}}}[5m]))",
                        "{{namespace}} late events",
                    ),
                ),
            ],
        ],
    )


def fraud() -> dict[str, Any]:
    return dashboard(
        "streamflow-fraud",
        "StreamFlow / Fraud detection",
        "The fraud-detector: decisions, alerts by reason, latency, shadow runs, the live model.",
        [
            [
                panel(
                    "Alert rate",
                    "percentunit",
                    target(
                        f"sum by (namespace) (rate({FLINK}alerts{{{FD}}}[5m]))"
                        f" / streamflow:decisions:rate5m{{{NS}}}",
                        "{{namespace}}",
                    ),
                ),
                panel(
                    "Alerts by reason code",
                    "reqps",
                    *(
                        target(f"sum by (namespace) (rate({FLINK}alerts_{c}{{{FD}}}[5m]))", code)
                        for code, c in ((f"FR-00{i}", f"FR_00{i}") for i in range(1, 7))
                    ),
                    description="An alert counts once under each reason it carries.",
                ),
            ],
            [
                panel(
                    "Decision latency p99",
                    "ms",
                    target(f"streamflow:decision_latency_p99:5m{{{NS}}}", "{{namespace}} p99"),
                    target(
                        f"sum by (namespace) (rate({FLINK}decision_latency_ms_sum{{{FD}}}[5m]))"
                        " / sum by (namespace) "
                        f"(rate({FLINK}decision_latency_samples{{{FD}}}[5m]))",
                        "{{namespace}} mean",
                    ),
                    description="From the Kafka record's timestamp to the decision; 1 in 16 "
                    "decisions is sampled.",
                ),
                panel(
                    "Decisions over 500 ms",
                    "percentunit",
                    target(
                        f'1 - streamflow:decision_latency_bucket:rate5m{{{NS}, le="500"}}'
                        " / ignoring (le) "
                        f'streamflow:decision_latency_bucket:rate5m{{{NS}, le="+Inf"}}',
                        "{{namespace}}",
                    ),
                    description="The SLO allows 1 %.",
                ),
            ],
            [
                panel(
                    "Shadow challenger",
                    "reqps",
                    target(
                        f"sum by (namespace) (rate({FLINK}shadow_alerts{{{FD}}}[5m]))",
                        "{{namespace}} shadow alerts",
                    ),
                    target(
                        f"sum by (namespace) (rate({FLINK}shadow_allows{{{FD}}}[5m]))",
                        "{{namespace}} shadow allows (live alerted)",
                    ),
                ),
                panel(
                    "Refused by the detector",
                    "reqps",
                    target(
                        f"sum by (namespace) (rate({FLINK}dead_letters{{{FD}}}[5m]))",
                        "{{namespace}} dead letters",
                    ),
                    target(
                        f"sum by (namespace) (rate({FLINK}duplicates{{{FD}}}[5m]))",
                        "{{namespace}} duplicates",
                    ),
                ),
                panel(
                    "Blacklist control records",
                    "short",
                    target(
                        f"sum by (namespace) (increase({FLINK}control_records{{{FD}}}[1h]))",
                        "{{namespace}} applied (1h)",
                    ),
                    target(
                        f"sum by (namespace) (increase({FLINK}control_ignored{{{FD}}}[1h]))",
                        "{{namespace}} ignored (1h)",
                    ),
                ),
            ],
            [
                panel(
                    "Live model age",
                    "s",
                    target(
                        f"time() - streamflow_model_live_since_timestamp_seconds{{{NS}}}",
                        "{{namespace}}/{{pipeline}} {{model_version}}",
                    ),
                    kind="stat",
                    description="Since the operator published the model the fraud-detector runs "
                    "(alert: 35 days).",
                ),
            ],
        ],
    )


def operator() -> dict[str, Any]:
    return dashboard(
        "streamflow-operator",
        "StreamFlow / Operator",
        "The kopf operator: reconciliation passes, children, API traffic, pipelines by phase.",
        [
            [
                panel(
                    "Pipelines by phase",
                    "short",
                    target("sum by (phase) (streamflow_pipelines)", "{{phase}}"),
                ),
                panel(
                    "Reconciliation passes",
                    "ops",
                    target(
                        "sum by (result) (rate(streamflow_reconciliations_total[5m]))", "{{result}}"
                    ),
                ),
                panel(
                    "Pass duration p95",
                    "s",
                    target(
                        "histogram_quantile(0.95, sum by (le) "
                        "(rate(streamflow_reconcile_duration_seconds_bucket[5m])))",
                        "p95",
                    ),
                ),
            ],
            [
                panel(
                    "Children that failed to apply",
                    "ops",
                    target(
                        "sum by (kind) (rate(streamflow_reconcile_errors_total[5m]))", "{{kind}}"
                    ),
                ),
                panel(
                    "Work queue",
                    "short",
                    target("sum (streamflow_queue_depth)", "waiting"),
                    target("sum (streamflow_passes_in_progress)", "running"),
                ),
                panel(
                    "Events posted",
                    "ops",
                    target(
                        "sum by (type, reason) (rate(streamflow_events_total[5m]))",
                        "{{type}} {{reason}}",
                    ),
                ),
            ],
            [
                panel(
                    "API requests",
                    "reqps",
                    target(
                        "sum by (verb, kind, code) (rate(streamflow_api_requests_total[5m]))",
                        "{{verb}} {{kind}} {{code}}",
                    ),
                ),
                panel(
                    "API writes and errors",
                    "reqps",
                    target(
                        "sum by (verb, kind) (rate(streamflow_api_writes_total[5m]))",
                        "{{verb}} {{kind}}",
                    ),
                    target(
                        "sum by (reason) (rate(streamflow_api_errors_total[5m]))",
                        "error {{reason}}",
                    ),
                ),
            ],
        ],
        namespaced=False,
    )


BOARDS = {"pipeline-overview": pipeline_overview, "fraud": fraud, "operator": operator}


def generated() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {PROMETHEUS_RULE: prometheus_rule()}
    for name, build in BOARDS.items():
        out[DASHBOARDS / f"{name}.json"] = json.dumps(build(), indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # never a half-written file under the final name
        print(f"wrote {path.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
