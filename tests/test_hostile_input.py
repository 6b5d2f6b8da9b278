"""No single event can blind the detector: hostile timestamps, duplicates, repeated keys.

Each test here failed before the detector was hardened (issue: "The core, hardened")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import ParsedTransaction, ParseFailure, Transaction, parse_transaction
from streamflow_jobs.model.loader import load_model
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState, decode_state, encode_state

pytestmark = pytest.mark.unit
BRT = timezone(timedelta(hours=-3))
SAO_PAULO = (-23.5505, -46.6333)
MANAUS = (-3.1190, -60.0217)
START = datetime(2026, 3, 2, 14, 0, tzinfo=BRT)


def txn(
    tid: str,
    when: datetime,
    amount: str = "100.00",
    where: tuple[float, float] = SAO_PAULO,
) -> Transaction:
    return Transaction(
        transaction_id=tid,
        customer_id="C1",
        store_id="S01",
        amount=Decimal(amount),
        timestamp=when,
        latitude=where[0],
        longitude=where[1],
        payment_method="pix",
    )


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(RulesConfig(), load_model())


def habits(detector: Detector, state: CustomerState, days: int = 10) -> None:
    """A customer who pays ~100 in São Paulo around 14:00 every day."""
    for d in range(days):
        when = START + timedelta(days=d, minutes=7 * (d % 5))
        detector.process(state, txn(f"h{d}", when, f"{90 + 5 * (d % 5)}.00"))


def codes(detector: Detector, state: CustomerState, t: Transaction) -> list[str]:
    detection = detector.process(state, t)
    assert detection.decision is not None
    return [r.code for r in detection.decision.reasons]


def burst(detector: Detector, state: CustomerState, at: datetime, n: int = 7) -> list[list[str]]:
    return [
        codes(detector, state, txn(f"b{at:%j%H%M}-{i}", at + timedelta(seconds=40 * i)))
        for i in range(n)
    ]


# ---- timestamps ----------------------------------------------------------------------------------
def test_one_event_dated_2099_does_not_switch_velocity_off(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    flagged = codes(detector, state, txn("x", datetime(2099, 1, 1, tzinfo=UTC)))
    assert flagged == ["TS-001"]
    later = burst(detector, state, START + timedelta(days=11))
    assert "FR-002" in later[-1] and "FR-002" in later[-2]


def test_a_burst_arriving_in_reverse_order_is_counted(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    at = START + timedelta(days=11)
    reversed_codes = [
        codes(detector, state, txn(f"r{i}", at + timedelta(seconds=40 * i)))
        for i in reversed(range(7))
    ]
    assert "FR-002" in reversed_codes[-1]


def test_a_far_future_event_does_not_blind_impossible_travel(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    detector.process(state, txn("x", datetime(2099, 1, 1, tzinfo=UTC), where=MANAUS))
    at = START + timedelta(days=11)
    detector.process(state, txn("home", at))
    assert "FR-003" in codes(detector, state, txn("far", at + timedelta(minutes=30), where=MANAUS))


def test_a_stale_event_does_not_blind_impossible_travel(detector: Detector) -> None:
    """The last location is the last arrival: a late event cannot freeze it in the future."""
    state = CustomerState()
    habits(detector, state)
    at = START + timedelta(days=11)
    detector.process(state, txn("old", START - timedelta(days=200), where=MANAUS))
    detector.process(state, txn("home", at))
    assert "FR-003" in codes(detector, state, txn("far", at + timedelta(minutes=30), where=MANAUS))


def test_an_implausible_event_changes_no_time_based_state(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    before = encode_state(state)
    detector.process(state, txn("x", datetime(2099, 1, 1, 3, 0, tzinfo=UTC), where=MANAUS))
    after = decode_state(encode_state(state))
    was = decode_state(before)
    assert (after.recent_ms, after.hour_n, after.hour_cos) == (
        was.recent_ms,
        was.hour_n,
        was.hour_cos,
    )
    assert (after.lat, after.lon, after.geo_ms) == (was.lat, was.lon, was.geo_ms)
    assert after.amount_n == was.amount_n + 1  # the amount is real: it still counts


def test_a_second_event_confirms_a_real_jump_in_time(detector: Detector) -> None:
    """A customer back after two years: the first event is flagged, the next is not."""
    state = CustomerState()
    habits(detector, state)
    back = START + timedelta(days=800)
    assert codes(detector, state, txn("back-1", back)) == ["TS-001"]
    assert "TS-001" not in codes(detector, state, txn("back-2", back + timedelta(hours=2)))
    assert decode_state(encode_state(state)).recent_ms[-1] == int(
        (back + timedelta(hours=2)).timestamp() * 1000
    )


def test_the_clock_check_refuses_events_from_the_future_in_live_streams(
    detector: Detector,
) -> None:
    now = START + timedelta(days=20)
    now_ms = int(now.timestamp() * 1000)
    ahead = detector.process(CustomerState(), txn("t", now + timedelta(hours=1)), now_ms=now_ms)
    assert ahead.decision is None and ahead.failure is not None
    assert ahead.failure.error_type == "timestamp_in_future" and ahead.failure.stage == "validate"
    assert "3,600 s ahead" in ahead.failure.message
    # Within the tolerance, and history (replays read months-old events): fine.
    for when in (now + timedelta(seconds=100), now - timedelta(days=180)):
        assert detector.process(CustomerState(), txn("t", when), now_ms=now_ms).decision


# ---- duplicates ----------------------------------------------------------------------------------
def test_a_retry_gets_the_first_decision_and_changes_nothing(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    at = START + timedelta(days=11)
    first = detector.process(state, txn("pay-1", at, "2500.00"))
    assert first.decision is not None and first.decision.is_alert and not first.duplicate
    stored = encode_state(state)
    for _ in range(20):
        again = detector.process(state, txn("pay-1", at, "2500.00"))
        assert again.duplicate and again.decision == first.decision
    assert encode_state(state) == stored
    # One event sent 21 times reads as one transaction, not 21 within the window.
    assert "FR-002" not in codes(detector, state, txn("pay-2", at + timedelta(seconds=30)))


def test_a_retry_after_the_state_was_stored_gets_the_same_decision(detector: Detector) -> None:
    """As in Flink: the state goes through its byte encoding between the two copies."""
    state = CustomerState()
    habits(detector, state)
    t = txn("pay-1", START + timedelta(days=11), "2500.00")
    first = detector.process(state, t).decision
    restored = decode_state(encode_state(state))
    again = detector.process(restored, t)
    assert again.duplicate and again.decision == first
    assert msgspec.json.encode(again.decision) == msgspec.json.encode(first)


def test_a_conflicting_copy_is_a_dead_letter_that_names_the_conflict(detector: Detector) -> None:
    state = CustomerState()
    habits(detector, state)
    at = START + timedelta(days=11)
    detector.process(state, txn("pay-1", at, "1.00"))
    stored = encode_state(state)
    for restored in (state, decode_state(stored)):
        altered = detector.process(restored, txn("pay-1", at, "99999.00"))
        assert altered.decision is None and altered.failure is not None
        assert altered.failure.error_type == "conflicting_duplicate"
        assert altered.failure.stage == "detect"
        assert "amount 99999.00 (first copy: 1.00)" in altered.failure.message
        assert encode_state(restored) == stored


def test_the_same_instant_written_in_another_zone_is_the_same_transaction(
    detector: Detector,
) -> None:
    state = CustomerState()
    at = START + timedelta(days=1)
    first = detector.process(state, txn("pay-1", at, "10.5"))
    restored = decode_state(encode_state(state))
    # 10.50 at 17:00Z is 10.5 at 14:00-03:00: the same payment, sent again.
    same = detector.process(restored, txn("pay-1", at.astimezone(UTC), "10.50"))
    assert same.duplicate and same.decision is not None and first.decision is not None
    assert same.decision.score == first.decision.score


# ---- repeated keys -------------------------------------------------------------------------------
EVENT = {
    "transaction_id": "k1",
    "customer_id": "C1",
    "store_id": "S01",
    "amount": 1.0,
    "timestamp": "2026-01-05T10:00:00-03:00",
    "currency": "BRL",
    "schema_version": 2,
}


def _with_repeat(key: str, value: object, *, spaced: bool = False, version: int = 2) -> bytes:
    body = orjson.dumps({**EVENT, "schema_version": version})[:-1]
    sep = b'" : ' if spaced else b'":'
    return body + b',"' + key.encode() + sep + orjson.dumps(value) + b"}"


@pytest.mark.parametrize(
    "raw",
    [
        _with_repeat("amount", 99999.0),
        _with_repeat("amount", 99999.0, spaced=True),
        _with_repeat("currency", "BRL"),  # a repeat of a default value counts too
        _with_repeat("schema_version", 2),
        _with_repeat("amount", 5, version=1),  # the tolerant path (schema v1)
        _with_repeat("extra", 1)[:-1] + b',"extra":2}',  # an unknown key, twice
        orjson.dumps(EVENT)[:-1] + b',"\\u0061mount":7}',  # an escaped name
    ],
)
def test_an_object_with_a_repeated_key_is_refused(raw: bytes) -> None:
    parsed = parse_transaction(raw)
    assert isinstance(parsed, ParseFailure), parsed
    assert parsed.error_type == "duplicate_key" and "appears more than once" in parsed.message


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(EVENT),
        orjson.dumps({**EVENT, "product_id": "amount"}),  # a field name as a value
        orjson.dumps({**EVENT, "product_id": 'a":"b'}),  # quotes and colons inside a value
        b'{"transaction_id" : "k1", "customer_id":"C1","store_id":"S01","amount":1,'
        b'"timestamp":"2026-01-05T10:00:00Z"}',
        orjson.dumps({k: v for k, v in EVENT.items() if k != "currency"}),
    ],
)
def test_ordinary_objects_are_not_mistaken_for_repeats(raw: bytes) -> None:
    assert isinstance(parse_transaction(raw), ParsedTransaction)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"transaction_id": "\xff"}',
        orjson.dumps(EVENT)[:-1] + b',"payment_method":"pi\xe9x"}',
    ],
)
def test_stray_bytes_inside_a_string_are_a_dead_letter_not_an_exception(raw: bytes) -> None:
    parsed = parse_transaction(raw)
    assert isinstance(parsed, ParseFailure) and parsed.error_type == "invalid_encoding"


# ---- rules versions ------------------------------------------------------------------------------
def test_the_rules_version_identifies_the_configuration() -> None:
    base = RulesConfig()
    assert base.content_version == RulesConfig().content_version
    assert base.content_version.startswith("1+")
    other = RulesConfig(alert_threshold=0.6)
    assert other.version == base.version and other.content_version != base.content_version
    decision = Detector(other, None).process(CustomerState(), txn("t", START)).decision
    assert decision is not None and decision.rules_version == other.content_version


# ---- the repeated-key scan against the exact check ---------------------------------------------
_json_text = st.text(alphabet=st.sampled_from('ab"\\:,{}[] \u00e9\n'), max_size=6)
_scalars = st.one_of(
    st.integers(), st.booleans(), st.none(), _json_text, st.floats(allow_nan=False)
)


@st.composite
def json_objects(draw: st.DrawFn) -> bytes:
    """A JSON object written pair by pair, so that keys may repeat; nested values too."""
    values = st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_text, inner, max_size=3),
        max_leaves=6,
    )
    keys = draw(
        st.lists(st.sampled_from(["a", "b", "a\\", 'q"', "amount", "é"]) | _json_text, max_size=6)
    )
    sep = draw(st.sampled_from([":", " : ", ":\n"]))
    pairs = [json.dumps(k) + sep + json.dumps(draw(values)) for k in keys]
    return ("{" + ", ".join(pairs) + "}").encode()


@settings(max_examples=500, deadline=None)
@given(json_objects())
def test_the_scan_agrees_with_the_exact_check(raw: bytes) -> None:
    from streamflow_jobs.jsonkeys import repeated_key, top_level_repeats  # noqa: PLC0415

    names = [k for k, _ in json.loads(raw, object_pairs_hook=lambda p: p)]  # top level only
    verdict = top_level_repeats(raw)
    if verdict == 0:
        assert len(set(names)) == len(names)
    elif verdict == 1:
        assert repeated_key(raw) is not None
