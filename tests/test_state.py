"""Customer state: encoding (round trip, size bound, old versions, corrupt input) and the velocity
window's behaviour under late, reversed and far-off event times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamflow_jobs.detector import Detector
from streamflow_jobs.events import Transaction
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import (
    DEDUP_MEMORY,
    MAX_RECENT,
    NO_TIME,
    CustomerState,
    StateEncodingError,
    decode_state,
    encode_state,
    fingerprint,
)

pytestmark = pytest.mark.unit

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
MINUTE = 60_000
WINDOW = 10 * MINUTE
T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
_DETECTOR = Detector(RulesConfig(), None)


def _remembered(state: CustomerState, ids: list[str]) -> None:
    """Decide real transactions into ``state`` so that it remembers them with their decisions."""
    for i, tid in enumerate(ids):
        txn = Transaction(
            transaction_id=tid,
            customer_id="C1",
            store_id="S01",
            amount=Decimal("10.00") + i,
            timestamp=T0 + timedelta(minutes=i),
        )
        probe = CustomerState()  # decide against a scratch state, keep only the remembered entry
        _DETECTOR.decide(txn, outcome := _DETECTOR.evaluate(probe, txn))
        assert outcome.seen is not None and outcome.seen.record is not None
        state.remember(outcome.seen, fingerprint(tid))


@st.composite
def states(draw: st.DrawFn) -> CustomerState:
    s = CustomerState()
    s.amount_n = draw(st.integers(0, 2**32 - 1))
    s.amount_mean, s.amount_m2 = draw(finite), draw(finite)
    s.hour_n = draw(st.integers(0, 2**32 - 1))
    s.hour_cos, s.hour_sin = draw(finite), draw(finite)
    s.has_geo = draw(st.booleans())
    s.lat, s.lon = draw(finite), draw(finite)
    s.geo_ms = draw(st.integers(-(2**62), 2**62))
    s.payment_mask = draw(st.integers(0, 2**32 - 1))
    s.home_n = draw(st.integers(0, 2**32 - 1))
    s.home_lat, s.home_lon = draw(finite), draw(finite)
    s.anchor_ms = draw(st.sampled_from([NO_TIME, 0]) | st.integers(-(2**62), 2**62))
    s.pending_ms = draw(st.sampled_from([NO_TIME, 0]) | st.integers(-(2**62), 2**62))
    s.recent_ms = sorted(draw(st.lists(st.integers(-(2**62), 2**62), max_size=MAX_RECENT)))
    ids = draw(
        st.lists(
            st.text(min_size=1, max_size=128).filter(str.strip), max_size=DEDUP_MEMORY, unique=True
        )
    )
    _remembered(s, ids)
    return s


@given(states())
def test_round_trip(state: CustomerState) -> None:
    blob = encode_state(state)
    assert blob[0] == 3
    again = decode_state(blob)
    assert again == state
    assert encode_state(again) == blob  # a decoded state re-encodes to the same bytes


def test_size_without_remembered_transactions() -> None:
    """The fixed part and a full velocity window: 1 + 107 + 8 * 32 bytes."""
    s = CustomerState()
    assert len(encode_state(s)) == 108
    s.recent_ms = list(range(MAX_RECENT))
    assert len(encode_state(s)) == 108 + 8 * MAX_RECENT == 364


@given(states())
def test_version_1_and_2_still_decode(state: CustomerState) -> None:
    state.recent_ms = state.recent_ms[-3:]
    if state.recent_ms:  # v1/v2 kept offsets of at most 2**32 - 1 ms back from the newest
        state.recent_ms = [state.recent_ms[-1] - i * MINUTE for i in range(2, -1, -1)]
    for version in (1, 2):
        old = decode_state(encode_state(state, version=version))
        assert old.amount_n == state.amount_n and old.recent_ms == state.recent_ms
        assert old.seen == [] and old.pending_ms == NO_TIME
        assert old.anchor_ms == (state.recent_ms[-1] if state.recent_ms else NO_TIME)
        if version == 1:
            assert old.payment_mask == 0 and old.home_n == 0  # fields v1 did not have
        else:
            assert old.payment_mask == state.payment_mask


def test_a_fixed_v1_snapshot_decodes() -> None:
    # Written by the version-1 layout: 3 transactions, mean 50, one recent event.
    state = CustomerState()
    state.amount_n, state.amount_mean, state.recent_ms = 3, 50.0, [1_000]
    blob = encode_state(state, version=1)
    assert blob[0] == 1
    assert decode_state(bytes.fromhex(blob.hex())).amount_mean == 50.0


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x09abc", b"\x02\x00", b"\x02" + b"\x00" * 200, b"\x03" + b"\x00" * 40],
)
def test_corrupt_state_is_refused(blob: bytes) -> None:
    with pytest.raises(StateEncodingError):
        decode_state(blob)


def test_truncated_or_padded_v3_state_is_refused() -> None:
    s = CustomerState()
    s.recent_ms = [1, 2, 3]
    _remembered(s, ["a", "b"])
    blob = encode_state(s)
    for bad in (blob[:-1], blob + b"\x00", blob[:-20]):
        with pytest.raises(StateEncodingError):
            decode_state(bad)


def test_a_state_with_an_undecided_transaction_cannot_be_encoded() -> None:
    s = CustomerState()
    txn = Transaction(
        transaction_id="t", customer_id="C1", store_id="S01", amount=Decimal(1), timestamp=T0
    )
    _DETECTOR.evaluate(s, txn)  # evaluated, not yet decided
    with pytest.raises(StateEncodingError, match="no stored record"):
        encode_state(s)


# ---- the velocity window ----------------------------------------------------------------------
def test_in_order_events_count_the_window_ending_at_each() -> None:
    s = CustomerState()
    counts = [s.add_event_time(t * MINUTE, WINDOW) for t in (0, 1, 2, 3, 20)]
    assert counts == [1, 2, 3, 4, 1]  # the event at minute 20 sees only itself
    # Minutes 0-3 stay until a second event is past their window (two witnesses), then go.
    assert s.recent_ms == [0, MINUTE, 2 * MINUTE, 3 * MINUTE, 20 * MINUTE]
    assert s.add_event_time(21 * MINUTE, WINDOW) == 2
    assert s.recent_ms == [20 * MINUTE, 21 * MINUTE]


def test_a_late_event_is_counted_within_its_window() -> None:
    s = CustomerState()
    for t in (0, 1, 2, 3, 20):
        s.add_event_time(t * MINUTE, WINDOW)
    # Late by a minute: the densest window holding it also holds minute 20.
    assert s.add_event_time(19 * MINUTE, WINDOW) == 2
    assert s.recent_ms == [19 * MINUTE, 20 * MINUTE]  # minute 3: past both windows
    # The next event in order counts the late one too.
    assert s.add_event_time(21 * MINUTE, WINDOW) == 3


def test_a_burst_in_reverse_order_is_counted_like_one_in_order() -> None:
    forward, backward = CustomerState(), CustomerState()
    times = [t * MINUTE for t in range(8)]
    ahead = [forward.add_event_time(t, WINDOW) for t in times]
    behind = [backward.add_event_time(t, WINDOW) for t in reversed(times)]
    assert ahead == behind == [1, 2, 3, 4, 5, 6, 7, 8]


def test_one_event_far_in_the_future_blinds_nothing() -> None:
    s = CustomerState()
    s.add_event_time(0, WINDOW)
    s.add_event_time(int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000), WINDOW)
    counts = [s.add_event_time(t * MINUTE, WINDOW) for t in range(1, 8)]
    assert counts == [2, 3, 4, 5, 6, 7, 8]


def test_one_event_far_in_the_past_evicts_nothing_newer() -> None:
    s = CustomerState()
    for t in range(5):
        s.add_event_time(1000 * MINUTE + t * MINUTE, WINDOW)
    assert s.add_event_time(0, WINDOW) == 1
    assert s.add_event_time(1005 * MINUTE, WINDOW) == 6


def test_the_window_is_bounded() -> None:
    s = CustomerState()
    for t in range(100):
        s.add_event_time(t, WINDOW)
    assert len(s.recent_ms) == MAX_RECENT
    assert s.recent_ms == list(range(100 - MAX_RECENT, 100))  # on overflow, the oldest go


def test_field_list_names_every_attribute() -> None:
    """_FIELDS is the class's __slots__ and what __eq__ compares: it must name every attribute
    CustomerState.__init__ sets. Read from the source, as the compiled class exposes no
    __slots__."""
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from streamflow_jobs import state as module  # noqa: PLC0415

    tree = ast.parse((Path(module.__file__).parent / "state.py").read_text())
    cls = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "CustomerState"
    )
    init = next(
        node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    assigned = {
        target.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
    }
    assert assigned == set(module._FIELDS)
