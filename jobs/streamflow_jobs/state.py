"""Per-customer detector state and its compact, versioned binary encoding (never pickle).

The fraud-detector keeps one :class:`CustomerState` per customer in Flink keyed state as the bytes
from :func:`encode_state`; the replay CLI keeps the objects in a dict. Both run the same evaluator.

What the state guarantees under hostile or disordered input (docs/detector-guarantees.md):

- Time is judged per event, never against "the newest time seen": the velocity window counts the
  densest window that contains the event (so a late event and a burst that arrives in reverse
  order are counted), and its bounded list evicts only what is older than the current event's
  window, or the oldest entry on overflow. One event dated 2099 occupies one slot; it cannot push
  later events out of their windows.
- An event whose time is implausibly far (``event_time.max_customer_gap_days``) from the
  customer's last plausible transaction is flagged and kept out of the time-based state (window,
  last location, hour profile) until a second event confirms the jump.
- The customer's last :data:`DEDUP_MEMORY` transactions are remembered by id with their decision,
  so a retry gets the first decision again and changes nothing (see dedup.py).

Encoding v3 (little-endian, ``struct``): a version byte, a fixed block, the recent event times as
int64 milliseconds, then the remembered transactions (id and a msgpack record each). Versions 1
and 2 still decode (the fields they lacked start empty).
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left, bisect_right, insort
from typing import Any, Final

STATE_VERSION: Final = 3
# Recent event times kept for the velocity window. The count saturates here, which is enough:
# the velocity rule's max_count is bounded at 30 by RulesConfig.
MAX_RECENT: Final = 32
# Transactions remembered per customer for idempotency: a retry of any of them is recognised.
DEDUP_MEMORY: Final = 8
# "No time": an anchor or pending time that is not set (~73 million years before 1970).
NO_TIME: Final = -(2**61)  # inside mypyc's tagged (unboxed) int range
_OFFSET_LIMIT = 2**32 - 1

# n, mean, m2 | hour_n, hour_cos, hour_sin | has_geo, lat, lon, geo_ms | payment_mask |
# home_n, home_lat, home_lon | anchor_ms, pending_ms | recent count, remembered count
_V3_FIXED = struct.Struct("<IddIddBddqIIddqqBB")
# v2 and v1 stored recent times as uint32 offsets back from the newest.
_V2_FIXED = struct.Struct("<IddIddBddqIIddB")
_V1_FIXED = struct.Struct("<IddIddBddqB")  # v1 had neither payment_mask nor the home centroid
_NEWEST = struct.Struct("<q")
_LENGTH = struct.Struct("<H")
_LAYOUTS = {1: _V1_FIXED, 2: _V2_FIXED, 3: _V3_FIXED}


# The attributes of CustomerState: its __slots__, and what __eq__/__repr__ read (a mypyc-compiled
# class exposes no __slots__ at run time).
_FIELDS = (
    "amount_m2",
    "amount_mean",
    "amount_n",
    "anchor_ms",
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
    "pending_ms",
    "recent_ms",
    "seen",
    "seen_filter",
)


_NAN: Final = float("nan")
_FILTER_MASK: Final = (1 << (7 * DEDUP_MEMORY)) - 1


def fingerprint(transaction_id: str) -> int:
    """The id's 7-bit fingerprint in the seen filter (1..127; per process)."""
    return hash(transaction_id) % 127 + 1


class StateEncodingError(ValueError):
    """Bytes that are not a customer state of a version this code knows."""


class Seen:  # noqa: PLW1641 - mutable, compared by value, never hashed
    """A remembered transaction, kept small and flat: the replay holds 8 per customer, and
    holding their Transaction and FraudDecision objects instead measured ~20 % slower (memory
    traffic). It keeps the id, the amount in cents and the time (to name a conflict), a hash of
    the rest of the content (per process), and the decision's scalars. In the encoded state it
    is a msgpack ``record`` (dedup.Remembered, with the full content); the per-event path builds
    that record at once, while it still has the transaction."""

    __slots__ = (
        "action",
        "alert",
        "amount_cents",
        "decided",
        "ml_score",
        "model_version",
        "ms",
        "other",
        "reasons",
        "record",
        "rules_score",
        "rules_version",
        "score",
        "transaction_id",
        "txn",
    )

    def __init__(
        self,
        transaction_id: str,
        amount_cents: int = 0,
        ms: int = 0,
        other: int = 0,
        txn: object = None,
        record: bytes | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.amount_cents = amount_cents
        self.ms = ms
        self.other = other  # hash() of the other content fields: valid in this process only
        self.txn = txn  # the Transaction, until the decision is known
        self.record = record
        self.decided = False
        self.score = 0.0
        self.rules_score = 0.0
        self.ml_score = 0.0  # NaN: no model
        self.alert = False
        self.action: object = None  # "allow", "review" or "block"
        self.reasons: object = None  # the decision's reasons, None when it had none
        self.rules_version: object = None
        self.model_version: object = None

    def decided_as(self, decision: Any, record: bytes | None) -> None:
        """Keep the decision's scalars (and the encoded record, on the per-event path); the
        transaction itself is let go."""
        ml = decision.ml_score
        self.decided_with(
            decision.score,
            decision.rules_score,
            _NAN if ml is None else ml,
            decision.is_alert,
            decision.action,
            decision.reasons,
            decision.rules_version,
            decision.model_version,
        )
        self.record = record

    def decided_with(
        self,
        score: float,
        rules_score: float,
        ml_score: float,
        alert: bool,
        action: object,
        reasons: object,
        rules_version: object,
        model_version: object,
    ) -> None:
        """The same from the values themselves (the batch path has them at hand)."""
        self.decided = True
        self.score = score
        self.rules_score = rules_score
        self.ml_score = ml_score
        self.alert = alert
        self.action = action
        self.reasons = reasons if reasons else None
        self.rules_version = rules_version
        self.model_version = model_version
        self.txn = None

    def stored(self) -> bytes:
        """The record as encoded in the state."""
        if self.record is None:
            raise StateEncodingError(
                f"transaction {self.transaction_id} has no stored record: only states kept by "
                "the per-event path (Detector.process/decide) can be encoded"
            )
        return self.record

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Seen):
            return NotImplemented
        return self.transaction_id == other.transaction_id and self.stored() == other.stored()

    def __repr__(self) -> str:
        return f"Seen({self.transaction_id!r})"


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
        # Last located transaction, by arrival: the travel check compares each pair of
        # consecutive located transactions, whichever came first in event time.
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
        # Event time of the last plausible transaction, and of a flagged one awaiting a second
        # witness (NO_TIME when unset).
        self.anchor_ms = NO_TIME
        self.pending_ms = NO_TIME
        # Event times (ms) of recent events, ascending; at most MAX_RECENT.
        self.recent_ms: list[int] = []
        # The last DEDUP_MEMORY transactions, oldest first, and a filter of their ids: 7-bit
        # fingerprints (1..127) packed newest-lowest, so that most events learn "not seen"
        # without touching the remembered objects (cold in memory). Per process: not encoded.
        self.seen: list[Seen] = []
        self.seen_filter = 0

    # ---- velocity window --------------------------------------------------------------------
    def add_event_time(self, ms: int, window_ms: int) -> int:
        """Record an event time; return the number of events in the densest window of
        ``window_ms`` that contains it (itself included).

        In order, that is the window (ms - window, ms]. Out of order, later events already
        recorded count too: a burst that arrives in reverse is counted like one in order.
        Eviction needs two witnesses: a time goes when it is older than the window before the
        *second* newest event (or before this one, if it is older), so one event far in the
        future cannot push the others out; on overflow the oldest go.
        """
        recent = self.recent_ms
        in_order = not recent or ms >= recent[-1]
        if in_order:
            recent.append(ms)
        else:
            insort(recent, ms)
        n = len(recent)
        second = recent[-2] if n >= 2 else ms
        drop = bisect_right(recent, (ms if ms < second else second) - window_ms)
        drop = max(drop, n - MAX_RECENT)
        if drop:
            del recent[:drop]
        if in_order:
            if recent[0] > ms - window_ms:  # the common case: all kept are in the window
                return len(recent)
            return len(recent) - bisect_right(recent, ms - window_ms)
        # The densest window (end - window, end] holding ms ends at ms or at a later event.
        best = 0
        i = bisect_left(recent, ms)
        n = len(recent)
        while i < n and recent[i] < ms + window_ms:
            end = recent[i]
            count = bisect_right(recent, end) - bisect_right(recent, end - window_ms)
            best = max(best, count)
            i += 1
        return best

    def previous_event_ms(self, ms: int) -> int | None:
        """The latest recorded event time strictly before ``ms`` (None if none is kept)."""
        recent = self.recent_ms
        if recent and recent[-1] < ms:
            return recent[-1]
        i = bisect_left(recent, ms)
        return recent[i - 1] if i else None

    # ---- idempotency ------------------------------------------------------------------------
    def find_seen(self, transaction_id: str, fingerprint: int) -> Seen | None:
        """The remembered entry of this transaction id (``fingerprint(transaction_id)``)."""
        packed = self.seen_filter
        while packed:
            if packed & 0x7F == fingerprint:
                for entry in self.seen:
                    if entry.transaction_id == transaction_id:
                        return entry
                return None
            packed >>= 7
        return None

    def remember(self, entry: Seen, fingerprint: int) -> None:
        seen = self.seen
        seen.append(entry)
        if len(seen) > DEDUP_MEMORY:
            del seen[0]
        self.seen_filter = ((self.seen_filter << 7) | fingerprint) & _FILTER_MASK

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
    """Encode in the current layout (``version=1|2`` writes an old one, for compatibility tests;
    they hold no anchor and no remembered transactions)."""
    if version not in _LAYOUTS:
        raise StateEncodingError(f"unknown customer state version {version}")
    recent = state.recent_ms
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
    if version < 3:
        values.append(len(recent))
        head = _LAYOUTS[version].pack(*values)
        if not recent:
            return bytes([version]) + head
        newest = recent[-1]
        offsets = [min(newest - t, _OFFSET_LIMIT) for t in recent]
        return (
            bytes([version])
            + head
            + _NEWEST.pack(newest)
            + struct.pack(f"<{len(offsets)}I", *offsets)
        )
    seen = state.seen
    values += [state.anchor_ms, state.pending_ms, len(recent), len(seen)]
    parts = [bytes([version]), _V3_FIXED.pack(*values), struct.pack(f"<{len(recent)}q", *recent)]
    for entry in seen:
        tid = entry.transaction_id.encode("utf-8")
        record = entry.stored()
        parts += [_LENGTH.pack(len(tid)), tid, _LENGTH.pack(len(record)), record]
    return b"".join(parts)


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
    if version >= 2:
        state.payment_mask, state.home_n, state.home_lat, state.home_lon = values[10:14]
    pos = 1 + fixed.size
    if version < 3:
        _decode_old_recent(state, data, pos, values[-1])
        return state
    state.anchor_ms, state.pending_ms, count, remembered = values[14:18]
    if count > MAX_RECENT or remembered > DEDUP_MEMORY:
        raise StateEncodingError(
            f"{count} recent events / {remembered} remembered transactions exceed the maximum"
        )
    try:
        state.recent_ms = list(struct.unpack_from(f"<{count}q", data, pos))
        pos += 8 * count
        for _ in range(remembered):
            (size,) = _LENGTH.unpack_from(data, pos)
            tid = data[pos + 2 : pos + 2 + size].decode("utf-8")
            pos += 2 + size
            (size,) = _LENGTH.unpack_from(data, pos)
            record = data[pos + 2 : pos + 2 + size]
            if len(record) != size:
                raise StateEncodingError("truncated remembered transaction")
            pos += 2 + size
            state.remember(Seen(tid, record=record), fingerprint(tid))
    except (struct.error, UnicodeDecodeError) as exc:
        raise StateEncodingError(f"truncated or corrupt v3 state: {exc}") from exc
    if pos != len(data):
        raise StateEncodingError(f"state is {len(data)} bytes, expected {pos}")
    if state.recent_ms != sorted(state.recent_ms):
        raise StateEncodingError("recent event times are not in order")
    return state


def _decode_old_recent(state: CustomerState, data: bytes, pos: int, count: int) -> None:
    if count > MAX_RECENT:
        raise StateEncodingError(f"{count} recent events exceed the maximum {MAX_RECENT}")
    if count:
        expected = pos + _NEWEST.size + 4 * count
        if len(data) != expected:
            raise StateEncodingError(f"state is {len(data)} bytes, expected {expected}")
        (newest,) = _NEWEST.unpack_from(data, pos)
        offsets = struct.unpack_from(f"<{count}I", data, pos + _NEWEST.size)
        state.recent_ms = [newest - o for o in offsets]
        state.anchor_ms = newest  # the newest event was the last plausible one
    elif len(data) != pos:
        raise StateEncodingError(f"state is {len(data)} bytes, expected {pos}")
