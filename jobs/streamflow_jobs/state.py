"""Per-customer detector state and its compact, versioned binary encoding (never pickle).

The fraud-detector keeps one :class:`CustomerState` per customer in Flink keyed state as the bytes
from :func:`encode_state`; the replay CLI keeps the objects in a dict. Both run the same evaluator.

Encoding (little-endian, ``struct``): a version byte, a fixed block, then the recent event times
of the velocity window as uint32 millisecond offsets back from the newest. Version 1 lacked the
payment-method set and the home centroid; it still decodes (both start empty). A state is at most
``1 + 90 + 8 + 4 * MAX_RECENT`` bytes (227 today), far under the 1 KiB budget.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left, bisect_right, insort

STATE_VERSION = 2
# Recent event times kept for the velocity window. The count saturates here, which is enough:
# the velocity rule's max_count is bounded at 30 by RulesConfig.
MAX_RECENT = 32
_OFFSET_LIMIT = 2**32 - 1

# n, mean, m2 | hour_n, hour_cos, hour_sin | has_geo, lat, lon, geo_ms | payment_mask |
# home_n, home_lat, home_lon | count
_V2_FIXED = struct.Struct("<IddIddBddqIIddB")
_V1_FIXED = struct.Struct("<IddIddBddqB")  # v1 had neither payment_mask nor the home centroid
_NEWEST = struct.Struct("<q")
_LAYOUTS = {1: _V1_FIXED, 2: _V2_FIXED}


# The attributes of CustomerState: its __slots__, and what __eq__/__repr__ read (a mypyc-compiled
# class exposes no __slots__ at run time).
_FIELDS = (
    "amount_m2",
    "amount_mean",
    "amount_n",
    "geo_ms",
    "has_geo",
    "home_lat",
    "home_lon",
    "home_n",
    "hour_cos",
    "hour_n",
    "hour_sin",
    "lat",
    "lon",
    "payment_mask",
    "recent_ms",
)


class StateEncodingError(ValueError):
    """Bytes that are not a customer state of a version this code knows."""


class CustomerState:  # noqa: PLW1641 - mutable, compared by value, never hashed
    """What the detector remembers about one customer. Mutated in place by the evaluator."""

    __slots__ = _FIELDS

    def __init__(self) -> None:
        # Welford running statistics of the (winsorised) amount.
        self.amount_n = 0
        self.amount_mean = 0.0
        self.amount_m2 = 0.0
        # Circular statistics of the hour of day: sums of cos/sin of the hour angle.
        self.hour_n = 0
        self.hour_cos = 0.0
        self.hour_sin = 0.0
        # Last located transaction (by event time).
        self.has_geo = False
        self.lat = 0.0
        self.lon = 0.0
        self.geo_ms = 0
        # Payment methods seen, as a 32-bit hashed set.
        self.payment_mask = 0
        # Running centroid of the customer's located transactions: where they usually are.
        self.home_n = 0
        self.home_lat = 0.0
        self.home_lon = 0.0
        # Event times (ms) inside the velocity window, ascending; at most MAX_RECENT.
        self.recent_ms: list[int] = []

    # ---- velocity window --------------------------------------------------------------------
    def add_event_time(self, ms: int, window_ms: int) -> int:
        """Record an event time; return how many events fall in (ms - window, ms], itself included.

        Out-of-order events are inserted in place; times older than the window before the newest
        are evicted, and the list never exceeds MAX_RECENT entries.
        """
        recent = self.recent_ms
        if not recent or ms >= recent[-1]:
            recent.append(ms)
            in_order = True
        else:
            insort(recent, ms)
            in_order = False
        # Evict what fell out of the window before the newest event, and keep at most MAX_RECENT.
        drop = bisect_right(recent, recent[-1] - window_ms)
        overflow = len(recent) - MAX_RECENT
        drop = max(drop, overflow)
        if drop:
            del recent[:drop]
        if in_order:  # the common case: everything kept is inside (ms - window, ms]
            return len(recent)
        return bisect_right(recent, ms) - bisect_right(recent, ms - window_ms)

    def previous_event_ms(self, ms: int) -> int | None:
        """The latest recorded event time strictly before ``ms`` (None if none is kept)."""
        recent = self.recent_ms
        if recent and recent[-1] < ms:
            return recent[-1]
        i = bisect_left(recent, ms)
        return recent[i - 1] if i else None

    # ---- payment methods --------------------------------------------------------------------
    @staticmethod
    def payment_bit(method: str) -> int:
        return 1 << (zlib.crc32(method.encode("utf-8")) & 31)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CustomerState):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in _FIELDS)

    def __repr__(self) -> str:
        fields = ", ".join(f"{s}={getattr(self, s)!r}" for s in _FIELDS)
        return f"CustomerState({fields})"


def encode_state(state: CustomerState, version: int = STATE_VERSION) -> bytes:
    """Encode in the current layout (``version=1`` writes the old one, for compatibility tests)."""
    if version not in _LAYOUTS:
        raise StateEncodingError(f"unknown customer state version {version}")
    recent = state.recent_ms
    newest = recent[-1] if recent else 0
    values: list[object] = [
        state.amount_n,
        state.amount_mean,
        state.amount_m2,
        state.hour_n,
        state.hour_cos,
        state.hour_sin,
        state.has_geo,
        state.lat,
        state.lon,
        state.geo_ms,
    ]
    if version >= 2:
        values += [state.payment_mask, state.home_n, state.home_lat, state.home_lon]
    values.append(len(recent))
    head = _LAYOUTS[version].pack(*values)
    offsets = [min(newest - t, _OFFSET_LIMIT) for t in recent]
    tail = _NEWEST.pack(newest) + struct.pack(f"<{len(offsets)}I", *offsets) if recent else b""
    return bytes([version]) + head + tail


def decode_state(data: bytes) -> CustomerState:
    """Decode any known version; raise StateEncodingError for anything else."""
    if not data:
        raise StateEncodingError("empty state")
    version = data[0]
    fixed = _LAYOUTS.get(version)
    if fixed is None:
        raise StateEncodingError(f"unknown customer state version {version}")
    try:
        values = fixed.unpack_from(data, 1)
    except struct.error as exc:
        raise StateEncodingError(f"truncated v{version} state: {exc}") from exc
    state = CustomerState()
    (
        state.amount_n,
        state.amount_mean,
        state.amount_m2,
        state.hour_n,
        state.hour_cos,
        state.hour_sin,
        has_geo,
        state.lat,
        state.lon,
        state.geo_ms,
    ) = values[:10]
    state.has_geo = bool(has_geo)
    if version == 2:
        state.payment_mask, state.home_n, state.home_lat, state.home_lon = values[10:14]
    count = values[-1]
    if count > MAX_RECENT:
        raise StateEncodingError(f"{count} recent events exceed the maximum {MAX_RECENT}")
    pos = 1 + fixed.size
    if count:
        expected = pos + _NEWEST.size + 4 * count
        if len(data) != expected:
            raise StateEncodingError(f"state is {len(data)} bytes, expected {expected}")
        (newest,) = _NEWEST.unpack_from(data, pos)
        offsets = struct.unpack_from(f"<{count}I", data, pos + _NEWEST.size)
        state.recent_ms = [newest - o for o in offsets]
    elif len(data) != pos:
        raise StateEncodingError(f"state is {len(data)} bytes, expected {pos}")
    return state
