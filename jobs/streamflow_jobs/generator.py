"""Synthetic payments: customers with habits, hard negatives and labelled fraud patterns.

Each customer has a home city (one store per Brazilian city), a spending level and spread, usual
hours of day (some around midnight), a rate and preferred payment methods. Legitimate traffic
includes hard negatives that look like fraud to a naive detector: trips to other cities at a
plausible pace and occasional big purchases. Fraud comes in labelled episodes (see PATTERNS).
Labels are written to their own file, never into the events. Everything is a function of the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

# name, latitude, longitude, UTC offset (hours), weight (share of customers living there)
CITIES: tuple[tuple[str, float, float, int, float], ...] = (
    ("São Paulo", -23.5505, -46.6333, -3, 0.25),
    ("Rio de Janeiro", -22.9068, -43.1729, -3, 0.15),
    ("Belo Horizonte", -19.9167, -43.9345, -3, 0.10),
    ("Brasília", -15.7939, -47.8828, -3, 0.10),
    ("Salvador", -12.9777, -38.5016, -3, 0.08),
    ("Fortaleza", -3.7319, -38.5267, -3, 0.07),
    ("Curitiba", -25.4284, -49.2733, -3, 0.08),
    ("Manaus", -3.1190, -60.0217, -4, 0.05),
    ("Recife", -8.0476, -34.8770, -3, 0.06),
    ("Porto Alegre", -30.0346, -51.2177, -3, 0.06),
)
STORES = tuple(f"S{i + 1:02d}" for i in range(len(CITIES)))
PAYMENT_METHODS = ("credit_card", "debit_card", "pix", "boleto", "wallet")
FRAUD_PATTERNS = (
    "high_value_spike",
    "card_testing",
    "velocity_burst",
    "impossible_travel",
    "unusual_hour",
    "account_takeover",
    "blacklisted_customer",
)
LEGIT_PATTERNS = ("legit", "legit_travel", "legit_big_purchase")
PATTERNS = LEGIT_PATTERNS + FRAUD_PATTERNS
# Share of the fraud budget (in events) given to each pattern, and the mean events per episode
# (episodes are drawn with probability share / size so that events follow the shares).
_FRAUD_MIX = (0.15, 0.15, 0.14, 0.14, 0.13, 0.15, 0.14)
_EPISODE_SIZE = (1.0, 5.0, 7.5, 1.5, 1.0, 3.0)
_START = datetime(2026, 1, 5, 0, 0, tzinfo=timezone(timedelta(hours=-3)))
_DAY = 86_400.0


@dataclass
class Customer:
    customer_id: str
    home: int  # city / store index
    spend_mu: float  # log-space mean of amounts
    spend_sigma: float
    hour_center: float
    hour_spread: float
    methods: tuple[str, ...]
    method_weights: tuple[float, ...]
    share: float  # relative transaction rate
    blocked: list[tuple[float, float]] = field(default_factory=list)  # trip windows (seconds)

    @property
    def typical_amount(self) -> float:
        return math.exp(self.spend_mu + self.spend_sigma**2 / 2)


@dataclass(order=True)
class _Event:
    t: float  # seconds since the start
    seq: int
    customer: Customer = field(compare=False)
    city: int = field(compare=False)
    amount: float = field(compare=False)
    method: str | None = field(compare=False)
    pattern: str = field(compare=False)


@dataclass(frozen=True)
class GeneratorConfig:
    events: int = 100_000
    fraud_rate: float = 0.02
    seed: int = 42
    customers: int = 1000
    products: int = 50
    v1_share: float = 0.03  # events still produced with schema v1 (no payment_method)
    days: float | None = None  # timeline length; default gives ~3 transactions/customer/day


class Generator:
    def __init__(self, cfg: GeneratorConfig) -> None:
        if cfg.events < 1:
            raise ValueError("events must be at least 1")
        if not 0 <= cfg.fraud_rate < 0.5:
            raise ValueError("fraud rate must be in [0, 0.5)")
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        n_customers = max(1, min(cfg.customers, cfg.events))
        self.customers = [self._customer(i) for i in range(n_customers)]
        self.days = cfg.days or max(2.0, cfg.events / (n_customers * 3.0))
        self.span = self.days * _DAY
        self.blacklist: list[str] = []
        self._seq = 0

    # ---- population --------------------------------------------------------------------------
    def _customer(self, i: int) -> Customer:
        rng = self.rng
        home = rng.choices(range(len(CITIES)), weights=[c[4] for c in CITIES])[0]
        kind = rng.random()
        if kind < 0.7:
            center = min(max(rng.gauss(14.0, 3.0), 8.0), 21.0)
        elif kind < 0.9:
            center = rng.uniform(19.0, 23.0)
        else:
            center = rng.uniform(23.0, 26.0) % 24  # night owls: usual hours wrap past midnight
        k = 1 if rng.random() < 0.6 else 2
        methods = tuple(rng.sample(PAYMENT_METHODS[:4], k))
        return Customer(
            customer_id=f"C{i + 1:05d}",
            home=home,
            spend_mu=rng.gauss(math.log(120.0), 0.7),
            spend_sigma=rng.uniform(0.2, 0.55),
            hour_center=center,
            hour_spread=rng.uniform(0.8, 2.2),
            methods=methods,
            method_weights=(1.0,) if k == 1 else (0.75, 0.25),
            share=rng.lognormvariate(0.0, 0.5),
        )

    # ---- primitives ----------------------------------------------------------------------------
    def _event(
        self,
        t: float,
        c: Customer,
        city: int,
        amount: float,
        pattern: str,
        method: str | None = None,
    ) -> _Event:
        self._seq += 1
        if method is None:
            method = self.rng.choices(c.methods, weights=c.method_weights)[0]
        return _Event(t, self._seq, c, city, max(0.01, round(amount, 2)), method, pattern)

    @staticmethod
    def _at_local_hour(t: float, hour: float, city: int) -> float:
        """The time on the UTC-3 day of ``t`` when the local clock in ``city`` reads ``hour``."""
        local_shift = (CITIES[city][3] + 3) * 3600  # the timeline's clock is UTC-3
        return math.floor(t / _DAY) * _DAY + (hour * 3600 - local_shift) % _DAY

    def _usual_time(self, c: Customer, day: float) -> float:
        hour = (self.rng.gauss(c.hour_center, c.hour_spread)) % 24
        return math.floor(day) * _DAY + hour * 3600 + self.rng.uniform(0, 59)

    def _amount(self, c: Customer) -> float:
        return self.rng.lognormvariate(c.spend_mu, c.spend_sigma)

    def _far_city(self, home: int, min_km: float = 800.0) -> int:
        from streamflow_jobs.rules.evaluator import haversine_km  # noqa: PLC0415

        h = CITIES[home]
        far = [i for i, c in enumerate(CITIES) if haversine_km(h[1], h[2], c[1], c[2]) >= min_km]
        return self.rng.choice(far or [i for i in range(len(CITIES)) if i != home] or [home])

    def _episode_start(self) -> float:
        # Leave the first fifth of the timeline for customers to build a history.
        return self.rng.uniform(0.2, 0.97) * self.span

    # ---- episodes ------------------------------------------------------------------------------
    def _fraud_episode(self, pattern: str, c: Customer) -> list[_Event]:
        rng, ev, typical = self.rng, self._event, c.typical_amount
        t = self._usual_time(c, self._episode_start() / _DAY)
        if pattern == "high_value_spike":
            return [ev(t, c, c.home, typical * rng.uniform(5, 20), pattern)]
        if pattern == "card_testing":
            city = c.home if rng.random() < 0.5 else rng.randrange(len(CITIES))
            out = []
            for _ in range(rng.randint(3, 5)):
                t += rng.uniform(20, 120)
                out.append(ev(t, c, city, rng.uniform(1.0, 5.0), pattern))
            t += rng.uniform(60, 300)
            out.append(ev(t, c, city, typical * rng.uniform(4, 12), pattern))
            return out
        if pattern == "velocity_burst":
            out = []
            for _ in range(rng.randint(6, 9)):
                t += rng.uniform(15, 70)
                out.append(ev(t, c, c.home, typical * rng.uniform(0.7, 2.5), pattern))
            return out
        if pattern == "impossible_travel":
            # The real customer pays at home; minutes later the card is used far away.
            home_event = ev(t, c, c.home, self._amount(c), "legit")
            far = self._far_city(c.home)
            t2 = t + rng.uniform(10, 75) * 60
            out = [home_event, ev(t2, c, far, typical * rng.uniform(1, 4), pattern)]
            if rng.random() < 0.5:
                out.append(
                    ev(t2 + rng.uniform(5, 30) * 60, c, far, typical * rng.uniform(1, 4), pattern)
                )
            return out
        if pattern == "unusual_hour":
            hour = (c.hour_center + 12 + rng.uniform(-2, 2)) % 24
            t = self._at_local_hour(t, hour, c.home)
            return [ev(t, c, c.home, typical * rng.uniform(1.5, 4), pattern)]
        if pattern == "account_takeover":
            far = self._far_city(c.home, 400.0)
            hour = (c.hour_center + 12 + rng.uniform(-3, 3)) % 24
            new = [m for m in PAYMENT_METHODS if m not in c.methods]
            method = rng.choice(new)
            t = self._at_local_hour(t, hour, far)
            out = []
            for _ in range(rng.randint(2, 4)):
                t += rng.uniform(5, 25) * 60
                out.append(ev(t, c, far, typical * rng.uniform(3, 10), pattern, method))
            return out
        raise ValueError(f"unknown pattern {pattern}")

    def _legit_trip(self, c: Customer) -> list[_Event]:
        """A real journey: leaves after a plausible travel time, buys a few things, comes back."""
        rng = self.rng
        dest = self._far_city(c.home, 300.0)
        start = self._episode_start()
        stay = rng.uniform(1.0, 4.0) * _DAY
        # Flights and drives: at least ~6 h door to door before the first purchase there.
        margin = 6 * 3600.0
        c.blocked.append((start - margin, start + stay + margin))
        out = []
        for _ in range(rng.randint(2, 5)):
            day = (start + rng.uniform(0, stay)) / _DAY
            out.append(
                self._event(self._usual_time(c, day), c, dest, self._amount(c), "legit_travel")
            )
        return out

    # ---- the whole stream --------------------------------------------------------------------
    def _plan(self) -> list[_Event]:
        cfg, rng = self.cfg, self.rng
        fraud_budget = round(cfg.events * cfg.fraud_rate)
        events: list[_Event] = []
        customers = list(self.customers)
        rng.shuffle(customers)
        # Blacklisted fraudster accounts: all their traffic is fraud.
        n_black = round(fraud_budget * _FRAUD_MIX[-1])
        blacklisted: list[Customer] = []
        while n_black > 0 and len(customers) > 1:
            c = customers.pop()
            c_events = min(
                n_black, max(1, round(rng.uniform(0.6, 1.4) * cfg.events / len(self.customers)))
            )
            blacklisted.append(c)
            for _ in range(c_events):
                t = self._usual_time(c, rng.uniform(0, self.days))
                events.append(self._event(t, c, c.home, self._amount(c), "blacklisted_customer"))
            n_black -= c_events
        self.blacklist = sorted(c.customer_id for c in blacklisted)

        fraud_left = fraud_budget - len(events)
        weights = [share / size for share, size in zip(_FRAUD_MIX, _EPISODE_SIZE, strict=False)]
        while fraud_left > 0:
            pattern = rng.choices(FRAUD_PATTERNS[:-1], weights=weights)[0]
            episode = list(self._fraud_episode(pattern, rng.choice(customers)))
            frauds = [e for e in episode if e.pattern != "legit"]
            if len(frauds) > fraud_left:
                keep = {id(e) for e in frauds[:fraud_left]}
                episode = [e for e in episode if e.pattern == "legit" or id(e) in keep]
            events.extend(episode)
            fraud_left -= min(len(frauds), fraud_left)

        # Hard negatives: trips for ~5 % of customers, big purchases in ~0.6 % of events.
        for c in rng.sample(customers, k=min(len(customers), max(1, len(customers) * 5 // 100))):
            if len(events) < cfg.events:
                events.extend(self._legit_trip(c))
        for _ in range(int(cfg.events * 0.006)):
            c = rng.choice(customers)
            t = self._usual_time(c, rng.uniform(0.1, 1.0) * self.days)
            events.append(
                self._event(
                    t, c, c.home, c.typical_amount * rng.uniform(3, 6), "legit_big_purchase"
                )
            )
        events = events[: cfg.events]

        # Ordinary traffic fills the rest, spread over customers by their rate, away from trips.
        regular = cfg.events - len(events)
        shares = [c.share for c in customers]
        for c in rng.choices(customers, weights=shares, k=regular):
            for _ in range(100):
                t = self._usual_time(c, rng.uniform(0, self.days))
                if not any(a <= t <= b for a, b in c.blocked):
                    break
            events.append(self._event(t, c, c.home, self._amount(c), "legit"))
        events.sort()
        return events

    def generate(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (event, label) pairs in event-time order."""
        rng, cfg = self.rng, self.cfg
        for e in self._plan():
            _, lat, lon, offset, _ = CITIES[e.city]
            tz = timezone(timedelta(hours=offset))
            local = (_START + timedelta(seconds=e.t)).astimezone(tz).replace(microsecond=0)
            txn_id = f"{rng.getrandbits(64):016x}-{e.seq:08d}"
            event: dict[str, Any] = {
                "transaction_id": txn_id,
                "customer_id": e.customer.customer_id,
                "store_id": STORES[e.city],
                "product_id": f"P{rng.randrange(cfg.products) + 1:03d}",
                "amount": e.amount,
                "currency": "BRL",
                "payment_method": e.method,
                # Stores are points; the terminal's reported position jitters by ~1-3 km.
                "latitude": round(lat + rng.gauss(0, 0.015), 5),
                "longitude": round(lon + rng.gauss(0, 0.015), 5),
                "timestamp": local.isoformat(),
                "schema_version": 2,
            }
            if rng.random() < cfg.v1_share:
                del event["payment_method"]
                event["schema_version"] = 1
            label = {
                "transaction_id": txn_id,
                "is_fraud": e.pattern in FRAUD_PATTERNS,
                "pattern": e.pattern,
            }
            yield event, label
