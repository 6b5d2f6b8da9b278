"""Pure parts of the warehouse package: where the local database is, DSN checks, the model
comparison, the dead-letter threshold, feedback parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamflow_jobs.warehouse import build, training
from streamflow_jobs.warehouse.dead_letters import over_threshold
from streamflow_jobs.warehouse.feedback import FeedbackError, read_verdicts

pytestmark = pytest.mark.unit


def test_the_local_dsn_comes_from_the_infra_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFLOW_INFRA_DIR", str(tmp_path))
    with pytest.raises(build.WarehouseError) as missing:
        build.local_dsn()
    assert str(missing.value) == "no local database: run `streamflow infra up` or pass --dsn"
    state = tmp_path / "state.json"
    for broken in ("{", "[]", '{"postgres": {}}', '{"postgres": {"dsn": ""}}'):
        state.write_text(broken)
        with pytest.raises(build.WarehouseError, match="no local database"):
            build.local_dsn()
    url = "postgresql://streamflow:pw@127.0.0.1:5544/streamflow"
    state.write_text(json.dumps({"postgres": {"dsn": url}, "kafka": {"bootstrap": "x:1"}}))
    assert build.local_dsn() == url


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("host=x password=hunter2 broken", "not a valid libpq URL"),
        ("postgresql://u:hunter2@h1,h2/db", "several hosts"),
        ("postgresql://u:hunter2@h/db?options=-c%20x", "not supported by the warehouse build"),
    ],
)
def test_a_bad_dsn_is_one_line_without_its_password(dsn: str, message: str) -> None:
    with pytest.raises(build.WarehouseError, match=message) as err:
        build.dbt_environment(dsn)
    assert "hunter2" not in str(err.value)


def test_the_dbt_environment_carries_the_connection() -> None:
    env = build.dbt_environment("postgresql://app:s3cr%40t@db.example:6543/app?sslmode=require")
    assert {k: v for k, v in env.items() if k.startswith(("STREAMFLOW", "DBT_ENV"))} == {
        "STREAMFLOW_DBT_HOST": "db.example",
        "STREAMFLOW_DBT_PORT": "6543",
        "STREAMFLOW_DBT_USER": "app",
        "DBT_ENV_SECRET_STREAMFLOW_PASSWORD": "s3cr@t",
        "STREAMFLOW_DBT_DBNAME": "app",
        "STREAMFLOW_DBT_SSLMODE": "require",
    }


def metrics(ap: float, recall: float, fraud: int = 40) -> dict[str, Any]:
    return {"fraud": fraud, "average_precision": ap, "recall_at_1pct_alert_rate": recall}


@pytest.mark.parametrize(
    ("reason", "baseline", "candidate", "accepted", "says"),
    [
        ("better on both", metrics(0.80, 0.50), metrics(0.85, 0.55), True, "not worse"),
        ("equal", metrics(0.80, 0.50), metrics(0.80, 0.50), True, "not worse"),
        ("within tolerance", metrics(0.80, 0.50), metrics(0.796, 0.50), True, "not worse"),
        ("worse AP", metrics(0.80, 0.50), metrics(0.70, 0.60), False, "worse on average_precision"),
        ("worse recall", metrics(0.80, 0.50), metrics(0.90, 0.40), False, "recall_at_1pct"),
        ("no fraud labelled", metrics(0.8, 0.5, fraud=0), metrics(0.9, 0.6), False, "no labelled"),
        (
            "metric missing",
            metrics(0.8, 0.5),
            {"fraud": 40, "average_precision": 0.9},
            False,
            "missing",
        ),
    ],
)
def test_a_candidate_is_registered_only_if_not_worse(
    reason: str,
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    accepted: bool,
    says: str,
) -> None:
    ok, why = training.not_worse({"baseline": baseline, "candidate": candidate})
    assert ok is accepted, reason
    assert says in why and "\n" not in why


def test_dead_letter_threshold() -> None:
    assert over_threshold({"invalid_json": 3, "validation_error": 10}, 5) == {
        "validation_error": 10
    }
    assert over_threshold({"invalid_json": 5}, 5) == {}


def test_feedback_lines_are_checked_whole_before_import(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"transaction_id": "t1", "is_fraud": true, "pattern": "card_testing"}\n'
        "\n"
        '{"transaction_id": "t2", "is_fraud": 0, "source": "chargebacks",'
        ' "reported_at": "2026-02-01T10:00:00"}\n'
        '{"transaction_id": "t1", "is_fraud": false}\n'
    )
    lines, verdicts = read_verdicts(path)
    assert lines == 3
    assert verdicts == {
        ("t1", "unknown", None): False,  # the same key later in the file wins
        ("t2", "chargebacks", datetime(2026, 2, 1, 10, tzinfo=UTC)): False,
    }
    for bad, says in [
        ('{"transaction_id": "t", "is_fraud": 2}', "is_fraud must be true/false or 1/0"),
        ('{"transaction_id": " ", "is_fraud": true}', "transaction_id must be"),
        ('{"is_fraud": true}', "not a verdict"),
        ("not json", "not a verdict"),
        ('{"transaction_id": "t", "is_fraud": true, "source": ""}', "source must be"),
        ('{"transaction_id": "' + "x" * 5000 + '", "is_fraud": true}', "longer than 4096"),
    ]:
        path.write_text('{"transaction_id": "ok", "is_fraud": true}\n' + bad + "\n")
        with pytest.raises(FeedbackError) as err:
            read_verdicts(path)
        assert str(err.value).startswith(f"{path}:2: ") and says in str(err.value)
