"""FR-001..FR-005 over one customer's state: reasons, the rules score and FR-006's features.

:meth:`RulesEvaluator.evaluate` is the single place where a transaction meets a customer's
history. The Flink fraud-detector's keyed process function and ``streamflow replay`` both call it,
so the same input gives the same decisions in both. It imports nothing from Flink or Kafka.

Each fired rule has a severity in [0.5, 1]: 0.5 at its threshold, 1 when far past it. The rules
score combines them as a noisy-OR of ``weight * severity``, so independent signals reinforce each
other and one decisive signal (a blacklist hit, weight 1) is enough on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streamflow_jobs.events import Reason, Transaction
from streamflow_jobs.model.features import FIRST_GAP_SECONDS, GEO_NOISE_KM, LOG_FIRST_GAP
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.state import CustomerState

EARTH_RADIUS_KM = 6371.0088
_HOUR_TO_RAD = 2 * math.pi / 24
_RAD_TO_HOUR = 24 / (2 * math.pi)
_LOG4 = math.log(4.0)
# Minimum established history before an unseen payment method counts as "new".
_PAYMENT_HISTORY = 5


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi = p2 - p1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _log_severity(observed: float, threshold: float) -> float:
    """0.5 at the threshold, 1.0 at four times it (log scale)."""
    return 0.5 + 0.5 * min(1.0, math.log(observed / threshold) / _LOG4)


def _linear_severity(observed: float, threshold: float) -> float:
    """0.5 at the threshold, 1.0 at twice it."""
    return 0.5 + 0.5 * min(1.0, (observed - threshold) / threshold)


@dataclass(slots=True)
class RuleOutcome:
    """What the rules found for one transaction, before the ML score is blended in."""

    rules_score: float
    reasons: list[Reason]
    features: tuple[float, ...]


class RulesEvaluator:
    """Evaluates a :class:`RulesConfig` against customer states. Holds no per-customer data."""

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self.set_blacklist(config.blacklist.customers, config.blacklist.stores)

    def set_blacklist(self, customers: list[str] | set[str], stores: list[str] | set[str]) -> None:
        """Replace the blacklist while running (the Flink job feeds it from broadcast state)."""
        self.blacklisted_customers = frozenset(customers)
        self.blacklisted_stores = frozenset(stores)

    def evaluate(self, state: CustomerState, txn: Transaction) -> RuleOutcome:
        """Judge ``txn`` against ``state``, then fold ``txn`` into ``state`` (in place)."""
        cfg = self.config
        amount = float(txn.amount)
        ms = txn.event_time_ms
        reasons: list[Reason] = []
        miss = 1.0  # running product of (1 - weight * severity): the noisy-OR complement

        # FR-001 high value, against the running mean of earlier transactions.
        hv = cfg.high_value
        n, mean = state.amount_n, state.amount_mean
        ratio = amount / mean if n and mean > 0 else 1.0
        if n >= 2:
            std = max(state.amount_std, 0.05 * mean, 0.01)
            amount_z = min(max((amount - mean) / std, -10.0), 50.0)
        else:
            amount_z = 0.0
        established = n >= hv.min_history
        if hv.enabled and established and ratio > hv.multiplier:
            sev = _log_severity(ratio, hv.multiplier)
            miss *= 1 - hv.weight * sev
            reasons.append(Reason(
                code="FR-001", rule="high_value", observed=round(ratio, 4),
                threshold=hv.multiplier, severity=sev,
                message=(f"amount {amount:.2f} is {ratio:.1f}x the customer's mean {mean:.2f} "
                         f"over {n} transactions (threshold {hv.multiplier:g}x)"),
            ))
        # Winsorise: an outlier moves the baseline no further than the threshold, so one spike
        # cannot hide the next, while a genuine shift in spending still pulls the mean along.
        state.add_amount(min(amount, mean * hv.multiplier) if established else amount)

        # FR-002 velocity, in event time.
        vel = cfg.velocity
        previous_ms = state.previous_event_ms(ms)
        count = state.add_event_time(ms, vel.window_seconds * 1000)
        if vel.enabled and count > vel.max_count:
            sev = _linear_severity(count, vel.max_count)
            miss *= 1 - vel.weight * sev
            reasons.append(Reason(
                code="FR-002", rule="velocity", observed=count, threshold=vel.max_count,
                severity=sev,
                message=(f"{count} transactions within {vel.window_seconds} s "
                         f"(threshold {vel.max_count})"),
            ))
        gap_s = (ms - previous_ms) / 1000 if previous_ms is not None else FIRST_GAP_SECONDS
        log_gap = math.log1p(gap_s) if previous_ms is not None else LOG_FIRST_GAP

        # FR-003 impossible travel, from the last located transaction.
        tr = cfg.impossible_travel
        lat, lon = txn.latitude, txn.longitude
        log_speed = log_distance = 0.0
        if lat is not None and lon is not None:
            if state.has_geo:
                dist = haversine_km(state.lat, state.lon, lat, lon)
                hours = abs(ms - state.geo_ms) / 3_600_000
                speed = dist / max(hours, 1 / 3600)  # one second at the least
                log_distance = math.log1p(dist)
                if dist >= GEO_NOISE_KM:
                    log_speed = math.log1p(speed)
                if tr.enabled and dist >= tr.min_distance_km and speed > tr.max_speed_kmh:
                    sev = _log_severity(speed, tr.max_speed_kmh)
                    miss *= 1 - tr.weight * sev
                    reasons.append(Reason(
                        code="FR-003", rule="impossible_travel", observed=round(speed, 1),
                        threshold=tr.max_speed_kmh, severity=sev,
                        message=(f"{dist:.0f} km from the previous transaction in "
                                 f"{hours * 60:.0f} min: {speed:.0f} km/h "
                                 f"(threshold {tr.max_speed_kmh:g} km/h)"),
                    ))
            if not state.has_geo or ms >= state.geo_ms:
                state.has_geo, state.lat, state.lon, state.geo_ms = True, lat, lon, ms

        # FR-004 unusual hour, circular statistics (23:30 is close to 00:30).
        uh = cfg.unusual_hour
        hour = txn.local_hour
        hour_dev = 0.0
        if state.hour_n >= uh.min_history:
            c, s, hn = state.hour_cos, state.hour_sin, state.hour_n
            resultant = min(math.hypot(c, s) / hn, 1.0)
            spread = math.sqrt(-2 * math.log(resultant)) * _RAD_TO_HOUR if resultant > 0 else 12.0
            spread = max(spread, uh.min_std_hours)
            usual = math.atan2(s, c) * _RAD_TO_HOUR
            diff = abs(hour - usual) % 24
            diff = min(diff, 24 - diff)
            hour_dev = min(diff / spread, 12.0)
            if uh.enabled and hour_dev > uh.max_std_devs:
                sev = _linear_severity(hour_dev, uh.max_std_devs)
                miss *= 1 - uh.weight * sev
                reasons.append(Reason(
                    code="FR-004", rule="unusual_hour", observed=round(hour_dev, 3),
                    threshold=uh.max_std_devs, severity=sev,
                    message=(f"{hour:05.2f} h is {hour_dev:.1f} std devs from the usual "
                             f"{usual % 24:05.2f} h (threshold {uh.max_std_devs:g})"),
                ))
        state.add_hour(hour)

        # FR-005 blacklist.
        bl = cfg.blacklist
        blacklisted = (txn.customer_id in self.blacklisted_customers
                       or txn.store_id in self.blacklisted_stores)
        if bl.enabled and blacklisted:
            miss *= 1 - bl.weight
            who = (f"customer {txn.customer_id}" if txn.customer_id in self.blacklisted_customers
                   else f"store {txn.store_id}")
            reasons.append(Reason(
                code="FR-005", rule="blacklist", observed=1.0, threshold=1.0, severity=1.0,
                message=f"{who} is on the blacklist",
            ))

        # A payment method never seen for an established customer (an account-takeover signal).
        new_method = 0.0
        method = txn.payment_method
        if method is not None:
            bit = CustomerState.payment_bit(method)
            if n >= _PAYMENT_HISTORY and state.payment_mask and not state.payment_mask & bit:
                new_method = 1.0
            state.payment_mask |= bit

        features = (
            math.log(ratio) if ratio > 0 else 0.0,
            amount_z,
            float(count),
            hour_dev,
            log_speed,
            log_distance,
            1.0 if blacklisted else 0.0,
            log_gap,
            new_method,
        )
        return RuleOutcome(1.0 - miss, reasons, features)
