"""FR-001..FR-005 over one customer's state: reasons, the rules score and FR-006's features.

:meth:`RulesEvaluator.evaluate` is the single place where a transaction meets a customer's
history. The Flink fraud-detector's keyed process function and ``streamflow replay`` both call it,
so the same input gives the same decisions in both. It imports nothing from Flink or Kafka.

Each fired rule has a severity in [0.25, 1]: weak evidence right at its threshold (a 2-sigma hour
is 1 in 20 ordinary transactions), full evidence at its saturation point (see ``saturation`` in
each rule's config). The rules score combines them as a noisy-OR of ``weight * severity``, so
independent signals reinforce each other and one decisive signal (a blacklist hit, weight 1) is
enough on its own.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import date, timedelta
from math import asin, atan2, cos, hypot, log, log1p, sin, sqrt  # names: no lookup per call
from typing import Literal

from streamflow_jobs.dedup import conflict
from streamflow_jobs.events import Reason, Transaction
from streamflow_jobs.model.features import LOG_FIRST_GAP
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import NO_TIME, CustomerState, Seen, fingerprint

EARTH_RADIUS_KM = 6371.0088
_DEG = math.pi / 180
_KM_PER_DEGREE = EARTH_RADIUS_KM * _DEG
_HOUR_TO_RAD = 2 * math.pi / 24
_RAD_TO_HOUR = 24 / (2 * math.pi)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NO_OFFSET = timedelta(0)
# Actions, ordered: a decision takes the strongest of its rules' and its score's.
ALLOW, REVIEW, BLOCK = 0, 1, 2
ACTIONS: tuple[Literal["allow"], Literal["review"], Literal["block"]] = ("allow", "review", "block")
_LEVEL = {"score": ALLOW, "review": REVIEW, "block": BLOCK}
# Located transactions before the running centroid counts as the customer's usual place.
_HOME_HISTORY = 3
# Minimum established history before an unseen payment method counts as "new".
_PAYMENT_HISTORY = 5


def _flat_km(lat: float, lon: float, lat0: float, lon0: float) -> float:
    """Equirectangular distance: city-scale accuracy, two trig calls fewer than haversine."""
    dy = lat - lat0
    dx = (lon - lon0) * cos(lat * _DEG)
    return _KM_PER_DEGREE * sqrt(dx * dx + dy * dy)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = lat1 * _DEG, lat2 * _DEG
    h1 = sin((p2 - p1) / 2)
    h2 = sin((lon2 - lon1) * _DEG / 2)
    a = h1 * h1 + cos(p1) * cos(p2) * h2 * h2
    return 2 * EARTH_RADIUS_KM * asin(sqrt(a) if a < 1.0 else 1.0)


_SEVERITY_AT_THRESHOLD = 0.25


def _log_severity(observed: float, threshold: float, saturation: float) -> float:
    """0.25 at the threshold, 1.0 at ``saturation`` times it, on a log scale."""
    progress = math.log(observed / threshold) / math.log(saturation)
    return _SEVERITY_AT_THRESHOLD + (1 - _SEVERITY_AT_THRESHOLD) * min(1.0, progress)


def _linear_severity(observed: float, threshold: float, saturation: float) -> float:
    """0.25 at the threshold, 1.0 at ``saturation`` times it, linearly."""
    progress = (observed - threshold) / (threshold * (saturation - 1))
    return _SEVERITY_AT_THRESHOLD + (1 - _SEVERITY_AT_THRESHOLD) * min(1.0, progress)


class RuleOutcome:
    """What the rules found for one transaction, before the ML score is blended in.

    A transaction seen before (same id, within the customer's remembered ones) is not evaluated:
    ``repeat_of`` is the remembered entry, and ``conflict`` says what differs when the copy's
    content is not the same (a dead letter). A new transaction's ``seen`` is the entry the
    Detector completes with its decision. (A plain class, not a dataclass: its constructor runs
    for every event, and mypyc's dataclass constructor measured ~2,500 instructions.)"""

    __slots__ = (
        "action",
        "conflict",
        "features",
        "reasons",
        "repeat_of",
        "rules_score",
        "seen",
        "severities",
    )

    def __init__(
        self,
        rules_score: float,
        reasons: list[Reason],
        features: tuple[float, ...],
        action: int = ALLOW,
        seen: Seen | None = None,
        repeat_of: Seen | None = None,
        conflict: str | None = None,
        severities: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    ) -> None:
        self.rules_score = rules_score
        self.reasons = reasons
        self.features = features
        # The strongest action of a rule that fired at full severity (ALLOW, REVIEW, BLOCK):
        # the decision is at least that, whatever the score says.
        self.action = action
        self.seen = seen
        self.repeat_of = repeat_of
        self.conflict = conflict
        # Each rule's severity, 0.0 when it did not fire, in model.features.SEVERITY_NAMES'
        # order: inputs of a supervised model.
        self.severities = severities


class RulesEvaluator:
    """Evaluates a :class:`RulesConfig` against customer states. Holds no per-customer data.

    The hot path reads plain attributes copied from the config once, and updates the state
    inline: this runs for every event of every customer (see docs/benchmarks.md).
    """

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        hv, vel, tr, uh = (
            config.high_value,
            config.velocity,
            config.impossible_travel,
            config.unusual_hour,
        )
        self._hv = (hv.enabled, hv.multiplier, hv.min_history, hv.saturation, hv.weight)
        # What each rule does on its own at full severity (FR-001..FR-005).
        self._acts = (
            _LEVEL[hv.action],
            _LEVEL[vel.action],
            _LEVEL[tr.action],
            _LEVEL[uh.action],
            _LEVEL[config.blacklist.action],
        )
        self._vel = (
            vel.enabled,
            vel.max_count,
            vel.window_seconds * 1000,
            vel.saturation,
            vel.weight,
        )
        self._tr = (tr.enabled, tr.max_speed_kmh, tr.min_distance_km, tr.saturation, tr.weight)
        self._uh = (
            uh.enabled,
            uh.max_std_devs,
            uh.min_history,
            uh.min_std_hours,
            uh.saturation,
            uh.weight,
        )
        self._bl = (config.blacklist.enabled, config.blacklist.weight)
        self._max_gap_ms = round(config.event_time.max_customer_gap_days * 86_400_000)
        # Running counts, for summaries and metrics: transactions seen again (duplicates and
        # conflicts) and events flagged with an implausible time (TS-001).
        self.repeated = 0
        self.flagged = 0
        self.set_blacklist(config.blacklist.customers, config.blacklist.stores)

    def set_blacklist(self, customers: list[str] | set[str], stores: list[str] | set[str]) -> None:
        """Replace the blacklist while running (the Flink job feeds it from broadcast state)."""
        self.blacklisted_customers = frozenset(customers)
        self.blacklisted_stores = frozenset(stores)

    def evaluate_batch(
        self, states: dict[str, CustomerState], txns: list[Transaction]
    ) -> list[RuleOutcome]:
        """:meth:`evaluate` each transaction in order against its customer's state in
        ``states`` (a new customer gets a fresh state): the replay's loop, compiled with it."""
        outcomes = []
        for txn in txns:
            state = states.get(txn.customer_id)
            if state is None:
                state = states[txn.customer_id] = CustomerState()
            outcomes.append(self.evaluate(state, txn))
        return outcomes

    def evaluate(self, state: CustomerState, txn: Transaction) -> RuleOutcome:
        """Judge ``txn`` against ``state``, then fold ``txn`` into ``state`` (in place).

        A transaction the state remembers is not judged again and changes nothing."""
        tid = txn.transaction_id
        seen_key = fingerprint(tid)
        entry = state.find_seen(tid, seen_key)
        if entry is not None:
            self.repeated += 1
            return RuleOutcome(0.0, [], (), False, None, entry, conflict(entry, txn))
        amount = float(txn.amount)
        ts = txn.timestamp
        ts_hour, ts_minute, ts_second = ts.hour, ts.minute, ts.second
        # Epoch milliseconds in integer arithmetic: exact (a float timestamp() * 1000 can land a
        # millisecond low) and half the cost. The contract requires a zone; a naive time built
        # in code is read as UTC.
        offset = ts.utcoffset() or _NO_OFFSET
        ms = (
            (ts.toordinal() - _EPOCH_ORDINAL) * 86_400_000
            + (ts_hour * 3600 + ts_minute * 60 + ts_second - offset.days * 86400 - offset.seconds)
            * 1000
            + ts.microsecond // 1000
        )
        reasons: list[Reason] = []
        hv_sev = vel_sev = tr_sev = uh_sev = bl_sev = 0.0  # RuleOutcome.severities
        miss = 1.0  # running product of (1 - weight * severity): the noisy-OR complement
        acts = self._acts
        action = ALLOW

        # Event time against the customer's own stream: an event implausibly far from the last
        # plausible one is flagged and kept out of the time-based state (velocity window, last
        # location, hour profile), unless a second event confirms the customer's clock moved.
        plausible = True
        anchor = state.anchor_ms
        if anchor == NO_TIME or abs(ms - anchor) <= self._max_gap_ms:
            state.anchor_ms, state.pending_ms = ms, NO_TIME
        elif state.pending_ms != NO_TIME and abs(ms - state.pending_ms) <= self._max_gap_ms:
            state.anchor_ms, state.pending_ms = ms, NO_TIME  # confirmed by a second event
        else:
            state.pending_ms = ms
            plausible = False
            self.flagged += 1
            gap_days = abs(ms - anchor) / 86_400_000
            reasons.append(
                Reason(
                    "TS-001",
                    "implausible_timestamp",
                    round(gap_days, 1),
                    self.config.event_time.max_customer_gap_days,
                    0.0,
                    f"event time is {gap_days:,.0f} days {'after' if ms > anchor else 'before'} "
                    "the customer's last transaction: not used for velocity, travel or hour "
                    "of day until another event confirms it",
                )
            )

        # FR-001 high value, against the running mean of earlier transactions.
        hv_on, multiplier, hv_history, hv_sat, hv_weight = self._hv
        n, mean = state.amount_n, state.amount_mean
        ratio = amount / mean if n and mean > 0 else 1.0
        if n >= 2:
            std = sqrt(state.amount_m2 / (n - 1))
            floor = 0.05 * mean if mean > 0.2 else 0.01
            amount_z = (amount - mean) / (std if std > floor else floor)
            amount_z = -10.0 if amount_z < -10.0 else 50.0 if amount_z > 50.0 else amount_z
        else:
            amount_z = 0.0
        established = n >= hv_history
        if established and hv_on and ratio > multiplier:
            sev = hv_sev = _log_severity(ratio, multiplier, hv_sat)
            if sev >= 1.0 and acts[0] > action:
                action = acts[0]
            miss *= 1 - hv_weight * sev
            reasons.append(
                Reason(
                    "FR-001",
                    "high_value",
                    round(ratio, 4),
                    multiplier,
                    sev,
                    f"amount {amount:.2f} is {ratio:.1f}x the customer's mean {mean:.2f} "
                    f"over {n} transactions (threshold {multiplier:g}x)",
                )
            )
        # Welford, winsorised: an outlier moves the baseline no further than the threshold, so
        # one spike cannot hide the next, while a genuine shift in spending still pulls it along.
        cap = mean * multiplier
        x = cap if established and amount > cap else amount
        state.amount_n = n + 1
        delta = x - mean
        state.amount_mean = mean = mean + delta / (n + 1)
        state.amount_m2 += delta * (x - mean)

        # FR-002 velocity, in event time.
        vel_on, max_count, window_ms, vel_sat, vel_weight = self._vel
        recent = state.recent_ms
        previous_ms = recent[-1] if recent and recent[-1] <= ms else state.previous_event_ms(ms)
        count = state.add_event_time(ms, window_ms) if plausible else 1
        if vel_on and count > max_count:
            sev = vel_sev = _linear_severity(count, max_count, vel_sat)
            if sev >= 1.0 and acts[1] > action:
                action = acts[1]
            miss *= 1 - vel_weight * sev
            reasons.append(
                Reason(
                    "FR-002",
                    "velocity",
                    count,
                    max_count,
                    sev,
                    f"{count} transactions within {window_ms // 1000} s (threshold {max_count})",
                )
            )
        log_gap = log1p((ms - previous_ms) / 1000) if previous_ms is not None else LOG_FIRST_GAP

        # FR-003 impossible travel, from the last located transaction.
        lat, lon = txn.latitude, txn.longitude
        log_home = 0.0
        if lat is not None and lon is not None:
            home_n = state.home_n
            home_lat, home_lon = state.home_lat, state.home_lon
            home_km = -1.0  # no usual place yet
            if home_n:
                # Equirectangular distance to the customer's usual place: a feature, where
                # city-scale accuracy is plenty and two fewer trig calls matter.
                home_km = _flat_km(lat, lon, home_lat, home_lon)
                log_home = log1p(home_km)
            tr_on, max_speed, min_km, tr_sat, tr_weight = self._tr
            dist = -1.0  # from the previous located transaction; -1: none
            if state.has_geo and plausible:
                dist = haversine_km(state.lat, state.lon, lat, lon)
                hours = abs(ms - state.geo_ms) / 3_600_000
                speed = dist / (hours if hours > 1 / 3600 else 1 / 3600)  # a second at least
                # The jump back home: this event is at the customer's usual place and the
                # previous one was far from it. The odd one was the previous event (judged when
                # it came); flagging this one would flag the real customer after a fraud.
                returning = (
                    home_n >= _HOME_HISTORY
                    and 0.0 <= home_km < min_km
                    and _flat_km(state.lat, state.lon, home_lat, home_lon) >= min_km
                )
                if tr_on and dist >= min_km and speed > max_speed and not returning:
                    sev = tr_sev = _log_severity(speed, max_speed, tr_sat)
                    if sev >= 1.0 and acts[2] > action:
                        action = acts[2]
                    miss *= 1 - tr_weight * sev
                    reasons.append(
                        Reason(
                            "FR-003",
                            "impossible_travel",
                            round(speed, 1),
                            max_speed,
                            sev,
                            f"{dist:.0f} km from the previous transaction in {hours * 60:.0f} min: "
                            f"{speed:.0f} km/h (threshold {max_speed:g} km/h)",
                        )
                    )
            # The usual place is a running mean of the places the customer is at home: one trip
            # far away does not move it (else a single fraud would drag "home" hundreds of km
            # and hide the way back); staying at a new place (two located transactions near
            # each other, far from home) does, so a customer who moves is followed.
            if home_n < _HOME_HISTORY or home_km < min_km or 0.0 <= dist < min_km:
                state.home_n = home_n + 1
                state.home_lat += (lat - home_lat) / (home_n + 1)
                state.home_lon += (lon - home_lon) / (home_n + 1)
            if plausible:
                state.has_geo, state.lat, state.lon, state.geo_ms = True, lat, lon, ms

        # FR-004 unusual hour, circular statistics (23:30 is close to 00:30).
        uh_on, max_devs, uh_history, min_std, uh_sat, uh_weight = self._uh
        hour = ts_hour + ts_minute / 60.0 + ts_second / 3600.0
        hour_dev = 0.0
        hn = state.hour_n
        c, s = state.hour_cos, state.hour_sin
        if hn >= uh_history and plausible:
            resultant = hypot(c, s) / hn
            if resultant >= 1.0:
                spread = min_std
            elif resultant > 0:
                spread = sqrt(-2 * log(resultant)) * _RAD_TO_HOUR
                spread = spread if spread > min_std else min_std
            else:
                spread = 12.0
            usual = atan2(s, c) * _RAD_TO_HOUR
            diff = abs(hour - usual) % 24
            if diff > 12:
                diff = 24 - diff
            hour_dev = diff / spread if diff < 12 * spread else 12.0
            if uh_on and hour_dev > max_devs:
                sev = uh_sev = _linear_severity(hour_dev, max_devs, uh_sat)
                if sev >= 1.0 and acts[3] > action:
                    action = acts[3]
                miss *= 1 - uh_weight * sev
                reasons.append(
                    Reason(
                        "FR-004",
                        "unusual_hour",
                        round(hour_dev, 3),
                        max_devs,
                        sev,
                        f"{hour:05.2f} h is {hour_dev:.1f} std devs from the usual "
                        f"{usual % 24:05.2f} h (threshold {max_devs:g})",
                    )
                )
        if plausible:
            angle = hour * _HOUR_TO_RAD
            state.hour_n = hn + 1
            state.hour_cos = c + cos(angle)
            state.hour_sin = s + sin(angle)

        # FR-005 blacklist: a block rule.
        bl_on, bl_weight = self._bl
        customer_listed = txn.customer_id in self.blacklisted_customers
        blacklisted = customer_listed or txn.store_id in self.blacklisted_stores
        if blacklisted and bl_on:
            miss *= 1 - bl_weight
            action = max(action, acts[4])
            bl_sev = 1.0
            who = f"customer {txn.customer_id}" if customer_listed else f"store {txn.store_id}"
            reasons.append(
                Reason("FR-005", "blacklist", 1.0, 1.0, 1.0, f"{who} is on the blacklist")
            )

        # A payment method never seen for an established customer (an account-takeover signal).
        new_method = 0.0
        method = txn.payment_method
        if method is not None:
            bit = _payment_bit(method)
            mask = state.payment_mask
            if n >= _PAYMENT_HISTORY and mask and not mask & bit:
                new_method = 1.0
            state.payment_mask = mask | bit

        features = (
            log(ratio) if ratio > 0 else 0.0,
            amount_z,
            float(count),
            hour_dev,
            log_home,
            1.0 if blacklisted else 0.0,
            log_gap,
            new_method,
        )
        seen = Seen(
            tid,
            int(amount * 100 + 0.5),  # cents: exact for amounts with 2 decimals (dedup.cents)
            ms,
            hash((txn.store_id, txn.product_id, txn.currency, method, lat, lon)),
            txn,
        )
        state.remember(seen, seen_key)
        return RuleOutcome(
            1.0 - miss,
            reasons,
            features,
            action,
            seen,
            severities=(hv_sev, vel_sev, tr_sev, uh_sev, bl_sev),
        )


def remember_decisions(
    outcomes: Sequence[RuleOutcome],
    scores: list[float],
    ml_scores: list[float],
    alerts: list[bool],
    actions: Sequence[str],
    reasons: Sequence[list[Reason]],
    rules_version: str,
    model_version: str | None,
) -> None:
    """Complete each new transaction's remembered entry with its decision (made after the rules,
    once the model has scored the batch). The batch path keeps no encoded record."""
    for i, outcome in enumerate(outcomes):
        seen = outcome.seen
        if seen is not None:
            seen.decided_with(
                scores[i],
                outcome.rules_score,
                ml_scores[i],
                alerts[i],
                actions[i],
                reasons[i],
                rules_version,
                model_version,
            )


@functools.lru_cache(maxsize=256)
def _payment_bit(method: str) -> int:
    return CustomerState.payment_bit(method)
