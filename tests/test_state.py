"""Customer state encoding: round trip, size bound, old versions, corrupt input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamflow_jobs.state import (
    MAX_RECENT,
    CustomerState,
    StateEncodingError,
    decode_state,
    encode_state,
)

pytestmark = pytest.mark.unit

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


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
    newest = draw(st.integers(0, 2**62))
    offsets = draw(st.lists(st.integers(0, 86_400_000), max_size=MAX_RECENT))
    s.recent_ms = sorted(newest - o for o in offsets) if offsets else []
    if s.recent_ms:
        s.recent_ms[-1] = newest
    return s


@given(states())
def test_round_trip_and_size(state: CustomerState) -> None:
    blob = encode_state(state)
    assert len(blob) <= 1024
    assert decode_state(blob) == state


@given(states())
def test_version_1_still_decodes(state: CustomerState) -> None:
    old = decode_state(encode_state(state, version=1))
    assert old.amount_n == state.amount_n and old.recent_ms == state.recent_ms
    assert old.payment_mask == 0 and old.home_n == 0  # fields v1 did not have start empty


def test_a_fixed_v1_snapshot_decodes() -> None:
    # Written by the version-1 layout: 3 transactions, mean 50, one recent event.
    state = CustomerState()
    state.amount_n, state.amount_mean, state.recent_ms = 3, 50.0, [1_000]
    blob = encode_state(state, version=1)
    assert blob[0] == 1
    assert decode_state(bytes.fromhex(blob.hex())).amount_mean == 50.0


@pytest.mark.parametrize("blob", [b"", b"\x09abc", b"\x02\x00", b"\x02" + b"\x00" * 200])
def test_corrupt_state_is_refused(blob: bytes) -> None:
    with pytest.raises(StateEncodingError):
        decode_state(blob)


def test_velocity_window_is_event_time_and_bounded() -> None:
    s = CustomerState()
    minute = 60_000
    counts = [s.add_event_time(t * minute, 10 * minute) for t in (0, 1, 2, 3, 20)]
    assert counts == [1, 2, 3, 4, 1]  # the event at minute 20 sees only itself
    # A late event counts the window ending at its own time: 20 is after it, 0-3 too old.
    assert s.add_event_time(19 * minute, 10 * minute) == 1
    assert s.recent_ms == [19 * minute, 20 * minute]
    for t in range(100):
        s.add_event_time(30 * minute + t, 10 * minute)
    assert len(s.recent_ms) == MAX_RECENT


def test_field_list_names_every_attribute() -> None:
    """_FIELDS is the class's __slots__ and what __eq__ compares: it must name every attribute
    __init__ sets. Read from the source, as the compiled class exposes no __slots__."""
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from streamflow_jobs import state as module  # noqa: PLC0415

    tree = ast.parse((Path(module.__file__).parent / "state.py").read_text())
    init = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    assigned = {
        target.attr
        for node in ast.walk(init)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
    }
    assert assigned == set(module._FIELDS)
