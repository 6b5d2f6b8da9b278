"""config/monitoring/: the alert rules checked and unit-tested by promtool, the generated files
in step with their sources, every queried metric real, every runbook link resolving."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "config/monitoring"
RULES = MONITORING / "streamflow.rules.yaml"
RUNBOOK = ROOT / "docs/runbook.md"
REPOSITORY = yaml.safe_load((ROOT / "chart/streamflow-operator/Chart.yaml").read_text())["home"]
FLINK_USER = "flink_taskmanager_job_task_operator_streamflow_"

# Metrics of Flink itself and of its Kafka source that the rules and dashboards read. Flink's
# Prometheus reporter names a metric flink_<logical scope>_<name> ("Metric Reporters" ->
# Prometheus, https://nightlies.apache.org/flink/flink-docs-release-2.2/docs/deployment/metric_reporters/).
DOCUMENTED = {
    # https://nightlies.apache.org/flink/flink-docs-release-2.2/docs/ops/metrics/#availability
    # (job scope; `<jobStatus>Time` with metrics.job.status.enable's default CURRENT_TIME)
    "flink_jobmanager_job_numRestarts",
    "flink_jobmanager_job_runningTime",
    # .../docs/ops/metrics/#checkpointing
    "flink_jobmanager_job_lastCheckpointDuration",
    "flink_jobmanager_job_numberOfFailedCheckpoints",
    # The Kafka connector's KafkaSource metrics (FLIP-33 `pendingRecords`, operator scope):
    # https://nightlies.apache.org/flink/flink-docs-release-2.2/docs/connectors/datastream/kafka/#monitoring
    "flink_taskmanager_job_task_operator_pendingRecords",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "deriv", "time", "round",
    "histogram_quantile", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "label_values", "humanize",
}  # fmt: skip


def promtool() -> Path:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "config/versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    cache = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache/streamflow"))
    path = cache / "bin" / f"promtool-{versions['PROMETHEUS_VERSION'].strip()}"
    assert path.is_file(), f"{path} is built by `make test` (e2e/cluster/build.sh promtool)"
    return path


def run_promtool(*args: str) -> str:
    result = subprocess.run(
        [str(promtool()), *args],
        check=False,
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def build_module() -> Any:
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("monitoring_build", MONITORING / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(MONITORING.glob("dashboards/*.json"))}


def panel_queries() -> Iterator[tuple[str, str]]:
    for name, board in dashboards().items():
        for p in board["panels"]:
            for t in p["targets"]:
                yield f"{name}: {p['title']}", t["expr"]
        for v in board["templating"]["list"]:
            if v["type"] == "query":  # label_values(<metric>, <label>)
                m = re.fullmatch(r"label_values\((\w+), \w+\)", v["definition"])
                assert m, v["definition"]
                yield f"{name}: variable {v['name']}", m.group(1)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (selectors by __name__ are refused)."""
    assert "__name__" not in expr, f"select metrics by name, not by regex: {expr}"
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set(re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", text))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", n)}


def flink_counters() -> tuple[set[str], list[re.Pattern[str]]]:
    """The counters the jobs register in their `streamflow` group: names given as literals to
    common.counters(...) or _counter(...), and families given as f-strings (alerts_<code>)."""
    from streamflow_jobs.flink.fraud_detector import LATENCY_COUNTERS  # noqa: PLC0415

    names, families = set(LATENCY_COUNTERS), []
    for source in sorted((ROOT / "jobs/streamflow_jobs/flink").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in ("counters", "_counter"):
                continue
            for arg in node.args:
                items = arg.elts if isinstance(arg, ast.List | ast.Tuple) else [arg]
                if isinstance(arg, ast.IfExp):  # "shadow_alerts" if ... else "shadow_allows"
                    items = [arg.body, arg.orelse]
                for item in items:
                    if isinstance(item, ast.Constant) and isinstance(item.value, str):
                        names.add(item.value)
                    elif isinstance(item, ast.JoinedStr):
                        families.append(
                            re.compile(
                                "".join(
                                    re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+"
                                    for v in item.values
                                )
                            )
                        )
    return names, families


def known_metrics() -> tuple[set[str], list[re.Pattern[str]]]:
    from prometheus_client.metrics import MetricWrapperBase  # noqa: PLC0415

    from streamflow_operator import metrics  # noqa: PLC0415
    from streamflow_operator.render.postgres import MONITORING_QUERIES  # noqa: PLC0415

    known = set(DOCUMENTED)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            known |= {family.name + s for s in suffixes[family.type]}
    for query, q in MONITORING_QUERIES.items():
        for column in q["metrics"]:
            ((name, how),) = column.items()
            if how["usage"] in ("GAUGE", "COUNTER"):
                known.add(f"cnpg_{query}_{name}")
    known |= {r["record"] for r in rules() if "record" in r}
    names, families = flink_counters()
    known |= {FLINK_USER + n for n in names}
    return known, [re.compile(re.escape(FLINK_USER) + f.pattern) for f in families]


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", RULES.name)


def test_every_alert_fires_and_stays_quiet_in_promtools_unit_tests() -> None:
    run_promtool("test", "rules", "tests/streamflow.test.yaml")
    tests = yaml.safe_load((MONITORING / "tests/streamflow.test.yaml").read_text())["tests"]
    checks = [c for t in tests for c in t.get("alert_rule_test", [])]
    for alert in alerts():
        mine = [c for c in checks if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine) or any(
            len(c["exp_alerts"]) == 1 for c in mine
        ), f"{alert['alert']} is never shown quiet"


def test_the_generated_files_match_their_sources() -> None:
    for path, text in build_module().generated().items():
        assert path.read_text() == text, f"{path.name} drifted: run `make monitoring`"
    manifest = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert manifest["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (namespace) (rate(a_total{x="y"}[5m])) / on (namespace) b > 0', {"a_total", "b"}),
        ("histogram_quantile(0.99, sum by (le) (rate(c_bucket[5m])))", {"c_bucket"}),
        ("time() - d_seconds > 35 * 86400", {"d_seconds"}),
        ('e:rate5m{le="+Inf"} unless on (ns) f', {"e:rate5m", "f"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_queried_metric_exists() -> None:
    known, families = known_metrics()
    queries = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()]
    queries += list(panel_queries())
    assert len(queries) > 40
    for where, expr in queries:  # the reporter exports `streamflow-x` as `streamflow_x`
        assert not re.search(r'job_name=~?"[^"]*-', expr), f"{where}: {expr}"
    unknown = {
        (where, name)
        for where, expr in queries
        for name in metric_names(expr)
        if name not in known and not any(f.fullmatch(name) for f in families)
    }
    assert not unknown, sorted(unknown)


def test_the_latency_recording_rules_cover_every_bucket() -> None:
    from streamflow_jobs.flink.fraud_detector import LATENCY_BUCKETS_MS  # noqa: PLC0415

    bounds = [
        r["labels"]["le"]
        for r in rules()
        if r.get("record") == "streamflow:decision_latency_bucket:rate5m"
    ]
    assert bounds == [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def test_every_alert_links_to_its_runbook_section() -> None:
    known = anchors(RUNBOOK.read_text())
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        # Absolute, so that Alertmanager's and Grafana's links open (the repository's home).
        assert page == f"{REPOSITORY}/blob/main/docs/runbook.md", url
        assert anchor == alert["alert"].lower(), url
        assert anchor in known, f"docs/runbook.md has no section {alert['alert']}"
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]


def test_dashboards_are_complete_grafana_json() -> None:
    boards = dashboards()
    assert set(boards) == {"pipeline-overview", "fraud", "operator"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        for p in board["panels"]:
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
            pos = p["gridPos"]
            assert pos["x"] + pos["w"] <= 24, p["title"]
