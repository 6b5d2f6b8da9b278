"""FR-001..FR-005, features and the blend: table-driven, no external process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import Transaction
from streamflow_jobs.model.drivers import describe
from streamflow_jobs.model.features import FEATURE_NAMES
from streamflow_jobs.model.forest import ForestScorer
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.rules.config import BlacklistRule, RulesConfig
from streamflow_jobs.rules.evaluator import RulesEvaluator, haversine_km
from streamflow_jobs.state import CustomerState

pytestmark = pytest.mark.unit
BRT = timezone(timedelta(hours=-3))
SAO_PAULO = (-23.5505, -46.6333)
MANAUS = (-3.1190, -60.0217)
START = datetime(2026, 3, 2, 14, 0, tzinfo=BRT)


def txn(
    i: int,
    when: datetime,
    amount: str = "100.00",
    where: tuple[float, float] = SAO_PAULO,
    customer: str = "C1",
    store: str = "S01",
    method: str | None = "pix",
) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        customer_id=customer,
        store_id=store,
        amount=Decimal(amount),
        timestamp=when,
        latitude=where[0],
        longitude=where[1],
        payment_method=method,
    )


def history(ev: RulesEvaluator, days: int = 10, hour: int = 14) -> CustomerState:
    """A customer who pays ~100 in São Paulo around ``hour`` every day."""
    state = CustomerState()
    for d in range(days):
        when = START.replace(hour=hour) + timedelta(days=d, minutes=7 * (d % 5))
        ev.evaluate(state, txn(d, when, f"{90 + 5 * (d % 5)}.00"))
    return state


def codes(outcome: object) -> list[str]:
    return [r.code for r in outcome.reasons]  # type: ignore[attr-defined]


def test_ordinary_transaction_fires_nothing() -> None:
    ev = RulesEvaluator(RulesConfig())
    state = history(ev)
    out = ev.evaluate(state, txn(99, START + timedelta(days=10, minutes=20), "105.00"))
    assert codes(out) == [] and out.rules_score == 0.0
    assert len(out.features) == len(FEATURE_NAMES)


def test_fr001_high_value_needs_history_and_reports_values() -> None:
    ev = RulesEvaluator(RulesConfig())
    fresh = CustomerState()
    for i in range(4):
        ev.evaluate(fresh, txn(i, START + timedelta(days=i)))
    assert codes(ev.evaluate(fresh, txn(9, START + timedelta(days=5), "5000.00"))) == []
    state = history(ev)
    out = ev.evaluate(state, txn(99, START + timedelta(days=10), "1000.00"))
    (reason,) = out.reasons
    assert reason.code == "FR-001" and reason.threshold == 3.0
    assert reason.observed == pytest.approx(1000 / 100, rel=0.05)
    assert 0.25 < reason.severity <= 1.0 and out.rules_score > 0


def test_fr001_baseline_is_winsorised() -> None:
    ev = RulesEvaluator(RulesConfig())
    state = history(ev)
    ev.evaluate(state, txn(99, START + timedelta(days=10), "100000.00"))
    assert state.amount_mean < 150  # one spike cannot hide the next


def test_fr002_velocity_in_event_time() -> None:
    ev = RulesEvaluator(RulesConfig())
    state = history(ev)
    base = START + timedelta(days=11)
    outs = [ev.evaluate(state, txn(100 + i, base + timedelta(minutes=i))) for i in range(7)]
    assert [("FR-002" in codes(o)) for o in outs] == [False] * 5 + [True, True]
    assert outs[-1].reasons[-1].observed == 7
    # The same count spread over 70 minutes is ordinary.
    calm = history(ev)
    outs = [ev.evaluate(calm, txn(200 + i, base + timedelta(minutes=11 * i))) for i in range(7)]
    assert not any("FR-002" in codes(o) for o in outs)


def test_fr003_impossible_travel() -> None:
    ev = RulesEvaluator(RulesConfig())
    state = history(ev)
    at = START + timedelta(days=11)
    ev.evaluate(state, txn(100, at))
    out = ev.evaluate(state, txn(101, at + timedelta(minutes=30), where=MANAUS))
    assert "FR-003" in codes(out)
    distance = haversine_km(*SAO_PAULO, *MANAUS)
    assert 2600 < distance < 2750
    assert out.reasons[0].observed == pytest.approx(distance * 2, rel=0.01)
    # The same trip over two days is plausible.
    slow = history(ev)
    ev.evaluate(slow, txn(100, at))
    assert "FR-003" not in codes(ev.evaluate(slow, txn(101, at + timedelta(days=2), where=MANAUS)))


@pytest.mark.parametrize(
    ("usual", "hour", "fires"),
    [(14, 3, True), (14, 15, False), (23, 1, False), (1, 0, False), (0, 12, True)],
)
def test_fr004_unusual_hour_wraps_at_midnight(usual: int, hour: int, fires: bool) -> None:
    ev = RulesEvaluator(RulesConfig())
    state = history(ev, hour=usual)
    at = (START + timedelta(days=12)).replace(hour=hour)
    assert ("FR-004" in codes(ev.evaluate(state, txn(99, at)))) is fires


def test_fr005_blacklist_blocks_and_can_change_at_runtime() -> None:
    rules = RulesConfig(blacklist=BlacklistRule(stores=["S99"]))
    detector = Detector(rules, load_model())
    state = CustomerState()
    out = detector.evaluate(state, txn(1, START, customer="C7", store="S99"))
    decision = detector.decide(txn(1, START, store="S99"), out)
    assert codes(out) == ["FR-005"] and decision.is_alert
    assert decision.action == "block"  # a block rule: whatever the score says
    detector.evaluator.set_blacklist(customers=["C8"], stores=[])
    assert codes(detector.evaluate(state, txn(2, START, customer="C8"))) == ["FR-005"]
    assert codes(detector.evaluate(state, txn(3, START, customer="C7", store="S99"))) == []


def test_disabled_rule_does_not_fire() -> None:
    rules = RulesConfig(velocity={"enabled": False})  # type: ignore[arg-type]
    ev = RulesEvaluator(rules)
    state = history(ev)
    base = START + timedelta(days=11)
    outs = [ev.evaluate(state, txn(100 + i, base + timedelta(seconds=i))) for i in range(9)]
    assert not any("FR-002" in codes(o) for o in outs)


def test_blend_and_versions() -> None:
    rules = RulesConfig(version="2026-03", ml_alpha=0.4)
    detector = Detector(rules, ForestScorer.load())
    state = CustomerState()
    t = txn(1, START)
    d = detector.decide(t, detector.evaluate(state, t))
    assert d.ml_score is not None
    assert d.score == pytest.approx(0.4 * d.ml_score + 0.6 * d.rules_score)
    assert d.rules_version.startswith("2026-03+")
    assert d.model_version == detector.model.model_version  # type: ignore[union-attr]
    assert 0.0 <= d.score <= 1.0 and d.is_alert == (d.score >= 0.7)


def test_rules_config_yaml_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = RulesConfig(version="x", velocity={"max_count": 8})  # type: ignore[arg-type]
    path = tmp_path / "rules.yaml"
    path.write_text(rules.to_yaml())
    assert RulesConfig.from_yaml(path) == rules


@pytest.mark.parametrize(
    "bad",
    [
        {"alert_threshold": 0},
        {"ml_alpha": 1.5},
        {"velocity": {"max_count": 0}},
        {"high_value": {"multiplier": 1}},
        {"unknown": 1},
        {"velocity": {"window": 5}},
    ],
)
def test_rules_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RulesConfig.model_validate(bad)


def test_rules_config_accepts_camel_case_as_in_the_crd() -> None:
    rules = RulesConfig.model_validate({"velocity": {"windowSeconds": 300}, "mlAlpha": 0.5})
    assert rules.velocity.window_seconds == 300 and rules.ml_alpha == 0.5


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 1, 5, 10, 0, 0, 123_999, tzinfo=BRT),  # sub-millisecond part is floored
        datetime(2026, 3, 29, 1, 59, 59, 999_000, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    ],
)
def test_event_time_is_exact_epoch_milliseconds(when: datetime) -> None:
    """The velocity window keeps event times in epoch ms, computed in integers (no float)."""
    state = CustomerState()
    RulesEvaluator(RulesConfig()).evaluate(state, txn(1, when))
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert state.recent_ms == [(when - epoch) // timedelta(milliseconds=1)]


def test_a_naive_time_built_in_code_is_read_as_utc() -> None:
    state = CustomerState()
    RulesEvaluator(RulesConfig()).evaluate(state, txn(1, datetime(2026, 1, 5, 12, 0)))
    assert state.recent_ms == [int(datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp() * 1000)]


def test_fr003_does_not_flag_the_way_home() -> None:
    """The trip out is impossible travel; the return to the customer's usual places is not a
    second alert (it is the same trip, and it is the customer coming home)."""
    ev = RulesEvaluator(RulesConfig())
    state = history(ev)
    at = START + timedelta(days=11)
    ev.evaluate(state, txn(100, at))
    out = ev.evaluate(state, txn(101, at + timedelta(minutes=30), where=MANAUS))
    back = ev.evaluate(state, txn(102, at + timedelta(minutes=60)))
    assert "FR-003" in codes(out) and "FR-003" not in codes(back)
    # Away from home twice in a row: both legs are judged.
    away = history(ev)
    ev.evaluate(away, txn(200, at, where=MANAUS))
    far = (-8.05, -34.9)  # Recife
    assert "FR-003" in codes(ev.evaluate(away, txn(201, at + timedelta(minutes=30), where=far)))


@pytest.mark.parametrize(
    ("action", "expected"), [("score", "allow"), ("review", "review"), ("block", "block")]
)
def test_a_rule_at_full_severity_acts_as_configured(action: str, expected: str) -> None:
    rules = RulesConfig.model_validate(
        {"impossible_travel": {"action": action, "weight": 0.3}, "ml_alpha": 0}
    )
    detector = Detector(rules, None)
    state = history(detector.evaluator)
    at = START + timedelta(days=11)
    detector.decide(txn(100, at), detector.evaluate(state, txn(100, at)))
    trip = txn(101, at + timedelta(minutes=10), where=MANAUS)  # ~16000 km/h: full severity
    outcome = detector.evaluate(state, trip)
    decision = detector.decide(trip, outcome)
    assert codes(outcome) == ["FR-003"] and outcome.reasons[0].severity == 1.0
    assert decision.rules_score < rules.alert_threshold  # the score alone would not alert
    assert decision.action == expected
    assert decision.is_alert == (expected != "allow")


def test_score_thresholds_give_review_and_block() -> None:
    rules = RulesConfig(alert_threshold=0.3, block_threshold=0.5, ml_alpha=0)
    detector = Detector(rules, None)
    state = history(detector.evaluator)
    at = START + timedelta(days=11)
    big = txn(100, at, amount="5000.00")  # FR-001 at full severity: rules score 0.8
    decision = detector.decide(big, detector.evaluate(state, big))
    assert decision.score >= 0.5 and decision.action == "block"
    with pytest.raises(ValueError, match="block_threshold"):
        RulesConfig(alert_threshold=0.8, block_threshold=0.6)


def test_a_model_driven_alert_says_so_and_names_its_features() -> None:
    model = ForestScorer.load()
    quiet = {"enabled": False}
    rules = RulesConfig.model_validate(
        {"alert_threshold": 0.5, "ml_alpha": 1.0, "high_value": quiet, "unusual_hour": quiet}
    )
    detector = Detector(rules, model)
    state = history(detector.evaluator)
    at = START + timedelta(days=11, hours=12)  # 02:00, far from home, a new method, 6x amount
    odd = txn(100, at, amount="600.00", where=MANAUS, method="crypto")
    outcome = detector.evaluate(state, odd)
    decision = detector.decide(odd, outcome)
    assert outcome.rules_score == 0.0 and decision.is_alert  # the model alone alerts
    (reason,) = decision.reasons
    assert reason.code == "FR-006" and reason.rule == "model"
    assert decision.ml_score is not None and reason.observed == round(decision.ml_score, 4)
    assert reason.message.startswith(f"model score {decision.ml_score:.3f} drove this alert: ")
    # The inputs the model's own attribution says pushed it up, each against the baseline.
    row = model.input_row(outcome.features, outcome.severities)
    values = dict(zip(model.inputs, row, strict=True))
    top = [(n, values[n]) for n, c in model.explain_one(row) if c > 0][:3]
    assert len(top) == 3 and top[0][1] != 0
    assert reason.message.endswith("; ".join(describe(n, v) for n, v in top))
    assert "std devs from the customer's mean" in reason.message
    # Rules that alert on their own: no FR-006, even though the model agrees.
    strict = Detector(RulesConfig(alert_threshold=0.5, ml_alpha=0.0), model)
    d2 = strict.decide(odd, strict.evaluate(history(strict.evaluator), odd))
    assert d2.is_alert and "FR-006" not in codes(d2)
