"""Synthetic payments: a small simulator of worlds with labelled fraud and hard negatives.

A world is a function of its options (:class:`GeneratorConfig`): the seed, the number of events,
the fraud rate, the number of customers, the time span, the mix of fraud patterns, the region and
number of stores, how much and how often people buy, how many are night owls and how often hard
negatives happen. The same options give the same files, byte for byte. The defaults are the
project's reference world (10 Brazilian cities with one store each, 1000 customers, 2 % fraud):
with only the original options (events, fraud rate, seed, customers, products, v1 share, days) the
output is exactly what the generator gave before it became a simulator, so the shipped model and
the tests built on those worlds stay reproducible (ADR 0030).

Each customer has a home store, a spending level and spread, usual hours of day (some around
midnight), a rate of buying and preferred payment methods. Legitimate traffic includes hard
negatives that look like fraud to a naive detector (:data:`HARD_NEGATIVES`: trips to other cities
at a plausible pace, occasional big purchases). Fraud comes in labelled episodes: each pattern is
one entry of :data:`FRAUD_TABLE`, a name, its default share of the fraud events, its mean fraud
events per episode and a small function making one episode for a victim from the random generator
and the world's primitives (:meth:`Generator.event`, :meth:`Generator.episode_time`, ...).
Labels are written to their own file, never into the events.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Literal

DAY = 86_400.0
PAYMENT_METHODS = ("credit_card", "debit_card", "pix", "boleto", "wallet")
# Bounds of the options: a world must fit in memory (the plan holds every event) and in datetime.
MAX_EVENTS = 20_000_000
MAX_CUSTOMERS = 2_000_000
MAX_DAYS = 3660.0
MAX_STORES = 1000
MAX_PRODUCTS = 100_000
MAX_SEED = 2**63


# ---- geography -------------------------------------------------------------------------------
@dataclass(frozen=True)
class City:
    name: str
    latitude: float
    longitude: float
    utc_offset: int  # hours; the simulator knows no daylight saving time
    weight: float  # share of the region's customers living there


@dataclass(frozen=True)
class Region:
    cities: tuple[City, ...]
    currency: str
    clock: int  # UTC offset of the world's clock: its days start at midnight there
    # Usual hours are on the customer's home clock. The reference world ("brazil") keeps them on
    # the world's clock (UTC-3) as it always did: only Manaus (UTC-4) differs, by one hour.
    home_clock: bool = True


REGIONS: dict[str, Region] = {
    "brazil": Region(
        (
            City("São Paulo", -23.5505, -46.6333, -3, 0.25),
            City("Rio de Janeiro", -22.9068, -43.1729, -3, 0.15),
            City("Belo Horizonte", -19.9167, -43.9345, -3, 0.10),
            City("Brasília", -15.7939, -47.8828, -3, 0.10),
            City("Salvador", -12.9777, -38.5016, -3, 0.08),
            City("Fortaleza", -3.7319, -38.5267, -3, 0.07),
            City("Curitiba", -25.4284, -49.2733, -3, 0.08),
            City("Manaus", -3.1190, -60.0217, -4, 0.05),
            City("Recife", -8.0476, -34.8770, -3, 0.06),
            City("Porto Alegre", -30.0346, -51.2177, -3, 0.06),
        ),
        currency="BRL",
        clock=-3,
        home_clock=False,
    ),
    # Four time zones: the world's days start at midnight in New York.
    "usa": Region(
        (
            City("New York", 40.7128, -74.0060, -5, 0.22),
            City("Los Angeles", 34.0522, -118.2437, -8, 0.18),
            City("Chicago", 41.8781, -87.6298, -6, 0.12),
            City("Houston", 29.7604, -95.3698, -6, 0.10),
            City("Miami", 25.7617, -80.1918, -5, 0.08),
            City("Phoenix", 33.4484, -112.0740, -7, 0.07),
            City("Philadelphia", 39.9526, -75.1652, -5, 0.07),
            City("Seattle", 47.6062, -122.3321, -8, 0.06),
            City("Denver", 39.7392, -104.9903, -7, 0.05),
            City("Atlanta", 33.7490, -84.3880, -5, 0.05),
        ),
        currency="USD",
        clock=-5,
    ),
    "europe": Region(
        (
            City("London", 51.5074, -0.1278, 0, 0.20),
            City("Paris", 48.8566, 2.3522, 1, 0.16),
            City("Berlin", 52.5200, 13.4050, 1, 0.14),
            City("Madrid", 40.4168, -3.7038, 1, 0.12),
            City("Rome", 41.9028, 12.4964, 1, 0.10),
            City("Amsterdam", 52.3676, 4.9041, 1, 0.07),
            City("Warsaw", 52.2297, 21.0122, 1, 0.07),
            City("Lisbon", 38.7223, -9.1393, 0, 0.05),
            City("Athens", 37.9838, 23.7275, 2, 0.05),
            City("Stockholm", 59.3293, 18.0686, 1, 0.04),
        ),
        currency="EUR",
        clock=1,
    ),
}


@dataclass(frozen=True)
class Store:
    index: int  # in the world's list of stores
    store_id: str
    city: City
    latitude: float
    longitude: float
    weight: float  # share of customers living near it
    shift: float  # seconds from the world's clock to the store's local clock
    tz: tzinfo


# ---- people and events -----------------------------------------------------------------------
@dataclass(eq=False)
class Customer:
    customer_id: str
    home: Store
    spend_mu: float  # log-space mean of amounts
    spend_sigma: float
    hour_center: float  # usual hour of day (see Region.home_clock for which clock)
    hour_spread: float
    methods: tuple[str, ...]
    method_weights: tuple[float, ...]
    share: float  # relative transaction rate
    blocked: list[tuple[float, float]] = field(default_factory=list)  # trips (world seconds)

    @property
    def typical_amount(self) -> float:
        return math.exp(self.spend_mu + self.spend_sigma**2 / 2)


@dataclass(slots=True, eq=False)
class Event:
    """One planned transaction."""

    t: float  # seconds since the world's start
    seq: int  # creation order: breaks ties of t and numbers the transaction id
    customer: Customer
    store: Store
    amount: float
    method: str
    pattern: str


# A pattern's function: (the world's random generator, the world, the victim) -> one episode,
# in creation order. Every event it makes goes through Generator.event.
PatternFn = Callable[[random.Random, "Generator", Customer], list[Event]]


@dataclass(frozen=True)
class FraudPattern:
    """A kind of fraud. ``share`` is its default share of the fraud events and ``mean_events``
    the mean number of fraud events in one episode (episodes are drawn with weight
    share / mean_events so that events follow the shares).

    With ``own_accounts``, the pattern runs on accounts of its own, chosen when the world is
    built: every event of such an account is fraud, ``make`` makes one of them, and those
    accounts are the world's blacklist (known before :meth:`Generator.generate` runs).
    """

    name: str
    share: float
    mean_events: float
    make: PatternFn
    own_accounts: bool = False


@dataclass(frozen=True)
class HardNegative:
    """Legitimate traffic that looks like fraud: ``rate`` is the share of customers having one
    episode (``per="customer"``) or the episodes per event of the world (``per="event"``)."""

    name: str
    rate: float
    per: Literal["customer", "event"]
    make: PatternFn


# ---- the fraud patterns ----------------------------------------------------------------------
# Each function draws from ``rng`` in a fixed order: the reference world depends on it.
def _high_value_spike(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """One purchase 5-20x the customer's usual amount, at home, at a usual hour."""
    t = w.episode_time(c)
    return [w.event(t, c, c.home, c.typical_amount * rng.uniform(5, 20))]


def _card_testing(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """A few tiny purchases a minute or two apart, then a big one: the card works."""
    t = w.episode_time(c)
    store = c.home if rng.random() < 0.5 else w.stores[rng.randrange(len(w.stores))]
    out = []
    for _ in range(rng.randint(3, 5)):
        t += rng.uniform(20, 120)
        out.append(w.event(t, c, store, rng.uniform(1.0, 5.0)))
    t += rng.uniform(60, 300)
    out.append(w.event(t, c, store, c.typical_amount * rng.uniform(4, 12)))
    return out


def _velocity_burst(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """Six to nine ordinary-to-large purchases within minutes, at home."""
    t = w.episode_time(c)
    out = []
    for _ in range(rng.randint(6, 9)):
        t += rng.uniform(15, 70)
        out.append(w.event(t, c, c.home, c.typical_amount * rng.uniform(0.7, 2.5)))
    return out


def _impossible_travel(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """The real customer pays at home (legitimate); 10-75 minutes later the card is used
    >= 800 km away (or at the farthest store), once or twice."""
    t = w.episode_time(c)
    home = w.event(t, c, c.home, w.amount(c), pattern="legit")
    far = w.far_store(c.home, 800.0)
    t2 = t + rng.uniform(10, 75) * 60
    out = [home, w.event(t2, c, far, c.typical_amount * rng.uniform(1, 4))]
    if rng.random() < 0.5:
        out.append(
            w.event(t2 + rng.uniform(5, 30) * 60, c, far, c.typical_amount * rng.uniform(1, 4))
        )
    return out


def _unusual_hour(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """One purchase at home about twelve hours away from the customer's usual hours."""
    t = w.episode_time(c)
    hour = (c.hour_center + 12 + rng.uniform(-2, 2)) % 24
    t = w.at_local_hour(t, hour, c.home)
    return [w.event(t, c, c.home, c.typical_amount * rng.uniform(1.5, 4))]


def _account_takeover(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """Someone else, >= 400 km away, at the customer's night, with a payment method they never
    use: two to four large purchases minutes apart."""
    t = w.episode_time(c)
    far = w.far_store(c.home, 400.0)
    hour = (c.hour_center + 12 + rng.uniform(-3, 3)) % 24
    method = rng.choice([m for m in PAYMENT_METHODS if m not in c.methods])
    t = w.at_local_hour(t, hour, far)
    out = []
    for _ in range(rng.randint(2, 4)):
        t += rng.uniform(5, 25) * 60
        out.append(w.event(t, c, far, c.typical_amount * rng.uniform(3, 10), method))
    return out


def _blacklisted_customer(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """A fraudster's own account: ordinary-looking traffic anywhere in the span."""
    t = w.usual_time(c, rng.uniform(0, w.days))
    return [w.event(t, c, c.home, w.amount(c))]


# One entry per pattern. The order is part of the reference world (episodes are drawn over it).
FRAUD_TABLE: tuple[FraudPattern, ...] = (
    FraudPattern("high_value_spike", 0.15, 1.0, _high_value_spike),
    FraudPattern("card_testing", 0.15, 5.0, _card_testing),
    FraudPattern("velocity_burst", 0.14, 7.5, _velocity_burst),
    FraudPattern("impossible_travel", 0.14, 1.5, _impossible_travel),
    FraudPattern("unusual_hour", 0.13, 1.0, _unusual_hour),
    FraudPattern("account_takeover", 0.15, 3.0, _account_takeover),
    FraudPattern("blacklisted_customer", 0.14, 1.0, _blacklisted_customer, own_accounts=True),
)


# ---- the hard negatives ----------------------------------------------------------------------
def _legit_travel(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """A real journey of 1-4 days >= 300 km away: a few purchases there at usual hours, and no
    purchase at home from 6 h before the trip to 6 h after it."""
    dest = w.far_store(c.home, 300.0)
    start = w.episode_start()
    stay = rng.uniform(1.0, 4.0) * DAY
    margin = 6 * 3600.0
    c.blocked.append((start - margin, start + stay + margin))
    out = []
    for _ in range(rng.randint(2, 5)):
        day = (start + rng.uniform(0, stay)) / DAY
        out.append(w.event(w.usual_time(c, day), c, dest, w.amount(c)))
    return out


def _legit_big_purchase(rng: random.Random, w: Generator, c: Customer) -> list[Event]:
    """A genuine purchase 3-6x the usual amount (a television, a trip)."""
    t = w.usual_time(c, rng.uniform(0.1, 1.0) * w.days)
    return [w.event(t, c, c.home, c.typical_amount * rng.uniform(3, 6))]


HARD_NEGATIVES: tuple[HardNegative, ...] = (
    HardNegative("legit_travel", 0.05, "customer", _legit_travel),
    HardNegative("legit_big_purchase", 0.006, "event", _legit_big_purchase),
)
_MAX_RATE = {"customer": 1.0, "event": 0.1}

FRAUD_PATTERNS = tuple(p.name for p in FRAUD_TABLE)
LEGIT_PATTERNS = ("legit", *(h.name for h in HARD_NEGATIVES))
PATTERNS = LEGIT_PATTERNS + FRAUD_PATTERNS


# ---- options ---------------------------------------------------------------------------------
def parse_weights(text: str, known: tuple[str, ...], option: str) -> dict[str, float]:
    """``"a=2,b=1"`` -> ``{"a": 2.0, "b": 1.0}``; names must be ``known`` (one-line errors)."""
    if len(text) > 2000:
        raise ValueError(f"{option}: too long ({len(text)} characters)")
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name:
            raise ValueError(f"{option}: expected name=number, got {item.strip()!r}")
        if name not in known:
            raise ValueError(f"{option}: unknown name {name!r} (known: {', '.join(known)})")
        if name in out:
            raise ValueError(f"{option}: {name} given twice")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{option}: {name}={value!r} is not a number") from None
    return out


def _check_in(name: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    ok = math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)
    if not ok:
        close = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}{close}, got {value:g}")


@dataclass(frozen=True)
class GeneratorConfig:
    """The options of a world (validated when built: a ValueError with a one-line message).
    Every default is the reference world's."""

    events: int = 100_000
    fraud_rate: float = 0.02  # share of fraud events: exactly round(events * fraud_rate) of them
    seed: int = 42
    customers: int = 1000  # at most one per event
    products: int = 50
    v1_share: float = 0.03  # events still produced with schema v1 (no payment_method)
    days: float | None = None  # time span; default gives ~3 transactions/customer/day (>= 2)
    # Relative weights of the fraud patterns (FRAUD_TABLE's names; unlisted ones get none).
    mix: Mapping[str, float] | None = None
    region: str = "brazil"  # a key of REGIONS
    stores: int | None = None  # default: one per city of the region (10)
    spend_median: float = 120.0  # the median customer's usual amount
    activity_spread: float = 0.5  # log-normal spread of the customers' rates of buying
    night_owl_share: float = 0.10  # customers whose usual hours are around midnight
    # Rates of the hard negatives by name (HARD_NEGATIVES); unlisted ones keep their defaults.
    hard_negatives: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        # Read-only copies: a caller changing its dict later cannot change a built world's options.
        for name in ("mix", "hard_negatives"):
            given = getattr(self, name)
            if given is not None:
                object.__setattr__(self, name, MappingProxyType(dict(given)))
        for name, n, hi in (
            ("events", self.events, MAX_EVENTS),
            ("customers", self.customers, MAX_CUSTOMERS),
            ("products", self.products, MAX_PRODUCTS),
        ):
            if not 1 <= n <= hi:
                raise ValueError(f"{name} must be in [1, {hi}], got {n}")
        if not -MAX_SEED < self.seed < MAX_SEED:
            raise ValueError(f"seed must be in (-2^63, 2^63), got {self.seed}")
        _check_in("fraud rate", self.fraud_rate, 0.0, 0.5, hi_open=True)
        _check_in("v1 share", self.v1_share, 0.0, 1.0)
        if self.days is not None:
            _check_in("days", self.days, 1.0, MAX_DAYS)
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r} (known: {', '.join(REGIONS)})")
        if self.stores is not None and not 2 <= self.stores <= MAX_STORES:
            raise ValueError(f"stores must be in [2, {MAX_STORES}], got {self.stores}")
        _check_in("spend median", self.spend_median, 1.0, 100_000.0)
        _check_in("activity spread", self.activity_spread, 0.0, 2.0)
        _check_in("night-owl share", self.night_owl_share, 0.0, 1.0)
        if self.mix is not None:
            for name, weight in sorted(self.mix.items()):
                if name not in FRAUD_PATTERNS:
                    known = ", ".join(FRAUD_PATTERNS)
                    raise ValueError(f"unknown fraud pattern {name!r} (known: {known})")
                _check_in(f"weight of {name}", weight, 0.0, 1e6)
            if not math.fsum(self.mix.values()) > 0:
                raise ValueError("the pattern mix needs at least one pattern of weight > 0")
        for name, rate in sorted((self.hard_negatives or {}).items()):
            entry = next((h for h in HARD_NEGATIVES if h.name == name), None)
            if entry is None:
                known = ", ".join(h.name for h in HARD_NEGATIVES)
                raise ValueError(f"unknown hard negative {name!r} (known: {known})")
            _check_in(f"rate of {name}", rate, 0.0, _MAX_RATE[entry.per])

    def shares(self) -> dict[str, float]:
        """Each pattern's share of the fraud events (summing to 1), in FRAUD_TABLE's order."""
        if self.mix is None:
            return {p.name: p.share for p in FRAUD_TABLE}
        total = math.fsum(self.mix.values())
        return {p.name: self.mix.get(p.name, 0.0) / total for p in FRAUD_TABLE}

    def rates(self) -> dict[str, float]:
        """Each hard negative's rate, in HARD_NEGATIVES' order."""
        given = self.hard_negatives or {}
        return {h.name: given.get(h.name, h.rate) for h in HARD_NEGATIVES}


# ---- the world -------------------------------------------------------------------------------
def _offset(hours: int) -> tzinfo:
    return timezone(timedelta(hours=hours))


def _stores(region: Region, n: int | None, rng: random.Random) -> list[Store]:
    """One store per city (the first ``n`` cities when fewer); more stores go to the cities with
    the most customers per store, a few km from the first one (no random draw unless n > cities,
    so the reference world's stream is untouched)."""
    cities = region.cities[: n or len(region.cities)]
    placed = list(cities)
    while n is not None and len(placed) < n:
        counts = {c.name: 0 for c in cities}
        for c in placed:
            counts[c.name] += 1
        placed.append(max(cities, key=lambda c: c.weight / counts[c.name]))  # first on ties
    per_city = {c.name: placed.count(c) for c in cities}
    seen: set[str] = set()
    out = []
    for i, city in enumerate(placed):
        lat, lon = city.latitude, city.longitude
        if city.name in seen:
            lat, lon = lat + rng.uniform(-0.06, 0.06), lon + rng.uniform(-0.06, 0.06)
        seen.add(city.name)
        weight = city.weight if per_city[city.name] == 1 else city.weight / per_city[city.name]
        out.append(
            Store(
                index=i,
                store_id=f"S{i + 1:02d}",
                city=city,
                latitude=lat,
                longitude=lon,
                weight=weight,
                shift=(city.utc_offset - region.clock) * 3600.0,
                tz=_offset(city.utc_offset),
            )
        )
    return out


class Generator:
    """One world. ``stores``, ``customers`` and ``blacklist`` are known once it is built;
    :meth:`generate` yields its events and labels (the same ones at every call)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.region = REGIONS[cfg.region]
        self.rng = random.Random(cfg.seed)
        self.stores = _stores(self.region, cfg.stores, self.rng)
        self._home_weights = [s.weight for s in self.stores]
        n_customers = min(cfg.customers, cfg.events)
        self.customers = [self._customer(i) for i in range(n_customers)]
        self.days = cfg.days or min(MAX_DAYS, max(2.0, cfg.events / (n_customers * 3.0)))
        self.span = self.days * DAY
        # Midnight at the start of the world's first day, on the world's clock.
        self.start = datetime(2026, 1, 5, tzinfo=_offset(self.region.clock))
        self._distances: dict[tuple[int, int], float] = {}
        self._far: dict[tuple[int, float], list[Store]] = {}
        self._seq = 0
        self._shares = cfg.shares()
        self._fraud_budget = round(cfg.events * cfg.fraud_rate)
        # The accounts of own-account patterns (the blacklist) are chosen now, so they are known
        # before generate(); generate() continues from the random state saved here.
        self._pool = list(self.customers)
        self.rng.shuffle(self._pool)
        self._account_events, blacklist = self._plan_accounts()
        self.blacklist: list[str] = sorted(c.customer_id for c in blacklist)
        self._resume = (self.rng.getstate(), self._seq)

    # ---- population ------------------------------------------------------------------------
    def _customer(self, i: int) -> Customer:
        rng, cfg = self.rng, self.cfg
        home = rng.choices(self.stores, weights=self._home_weights)[0]
        # 7/9 of the others live by day, 2/9 in the evening (0.7 and 0.2 in the reference world).
        evening_cut = round(1.0 - cfg.night_owl_share, 12)
        day_cut = round(evening_cut * 7 / 9, 12)
        kind = rng.random()
        if kind < day_cut:
            center = min(max(rng.gauss(14.0, 3.0), 8.0), 21.0)
        elif kind < evening_cut:
            center = rng.uniform(19.0, 23.0)
        else:
            center = rng.uniform(23.0, 26.0) % 24  # night owls: usual hours wrap past midnight
        k = 1 if rng.random() < 0.6 else 2
        methods = tuple(rng.sample(PAYMENT_METHODS[:4], k))
        return Customer(
            customer_id=f"C{i + 1:05d}",
            home=home,
            spend_mu=rng.gauss(math.log(cfg.spend_median), 0.7),
            spend_sigma=rng.uniform(0.2, 0.55),
            hour_center=center,
            hour_spread=rng.uniform(0.8, 2.2),
            methods=methods,
            method_weights=(1.0,) if k == 1 else (0.75, 0.25),
            share=rng.lognormvariate(0.0, cfg.activity_spread),
        )

    # ---- primitives for the pattern functions ------------------------------------------------
    def event(
        self,
        t: float,
        c: Customer,
        store: Store,
        amount: float,
        method: str | None = None,
        pattern: str = "",
    ) -> Event:
        """A purchase at world time ``t`` (seconds); ``method`` None = one of the customer's
        (drawn now); ``pattern`` "" = the pattern whose episode this is."""
        self._seq += 1
        if method is None:
            method = self.rng.choices(c.methods, weights=c.method_weights)[0]
        return Event(t, self._seq, c, store, max(0.01, round(amount, 2)), method, pattern)

    def amount(self, c: Customer) -> float:
        """An ordinary amount for this customer."""
        return self.rng.lognormvariate(c.spend_mu, c.spend_sigma)

    def usual_time(self, c: Customer, day: float) -> float:
        """A time at one of the customer's usual hours on day ``floor(day)`` of the world."""
        hour = self.rng.gauss(c.hour_center, c.hour_spread) % 24
        t = math.floor(day) * DAY + hour * 3600
        if self.region.home_clock:
            t -= c.home.shift
        return t + self.rng.uniform(0, 59)

    def episode_start(self) -> float:
        """A time in the span after its first fifth (left for customers to build a history)."""
        return self.rng.uniform(0.2, 0.97) * self.span

    def episode_time(self, c: Customer) -> float:
        """When an episode starts: a usual hour of the customer, after the first fifth."""
        return self.usual_time(c, self.episode_start() / DAY)

    @staticmethod
    def at_local_hour(t: float, hour: float, store: Store) -> float:
        """The time on the world-clock day of ``t`` when the clock at ``store`` reads ``hour``."""
        return math.floor(t / DAY) * DAY + (hour * 3600 - store.shift) % DAY

    def distance_km(self, a: Store, b: Store) -> float:
        from streamflow_jobs.rules.evaluator import haversine_km  # noqa: PLC0415

        key = (a.index, b.index)
        if key not in self._distances:
            self._distances[key] = haversine_km(a.latitude, a.longitude, b.latitude, b.longitude)
        return self._distances[key]

    def far_store(self, home: Store, min_km: float) -> Store:
        """A random store at least ``min_km`` away, else the farthest one."""
        key = (home.index, min_km)
        if key not in self._far:
            far = [s for s in self.stores if self.distance_km(home, s) >= min_km]
            self._far[key] = far or [max(self.stores, key=lambda s: self.distance_km(home, s))]
        return self.rng.choice(self._far[key])

    def _run(self, name: str, make: PatternFn, c: Customer) -> list[Event]:
        events = make(self.rng, self, c)
        for e in events:
            if not e.pattern:
                e.pattern = name
        return events

    # ---- the whole stream --------------------------------------------------------------------
    def _plan_accounts(self) -> tuple[list[Event], list[Customer]]:
        """Own-account patterns take whole customers (from the end of the shuffled pool), each
        with 0.6-1.4x the mean events per customer, until their share of the fraud is made. One
        customer always stays for the legitimate traffic."""
        rng, pool, cfg = self.rng, self._pool, self.cfg
        events: list[Event] = []
        accounts: list[Customer] = []
        episodic = any(self._shares[p.name] > 0 for p in FRAUD_TABLE if not p.own_accounts)
        for p in FRAUD_TABLE:
            if not p.own_accounts:
                continue
            left = round(self._fraud_budget * self._shares[p.name])
            while left > 0 and len(pool) > 1:
                c = pool.pop()
                n = min(
                    left, max(1, round(rng.uniform(0.6, 1.4) * cfg.events / len(self.customers)))
                )
                if not episodic and len(pool) == 1:
                    n = left  # no other pattern can make the rest: the last account takes it
                accounts.append(c)
                for _ in range(n):
                    events.extend(self._run(p.name, p.make, c))
                left -= n
        if len(events) < self._fraud_budget and not episodic:
            raise ValueError(
                f"fraud only from blacklisted accounts needs at least 2 customers, got "
                f"{len(self.customers)}"
            )
        return events, accounts

    def _plan(self) -> list[Event]:
        cfg, rng = self.cfg, self.rng
        rng.setstate(self._resume[0])
        self._seq = self._resume[1]
        for c in self.customers:
            c.blocked.clear()
        customers = list(self._pool)
        events = list(self._account_events)

        # Episodes: a pattern drawn by its weight (share / mean events), then a victim. With an
        # explicit mix the weights follow what each pattern still lacks, so a small world gets
        # its mix within about one episode; without one, the weights stay fixed (the reference
        # world's draw, kept as it was: the shipped model is trained on it).
        fraud_left = self._fraud_budget - len(events)
        episodic = [p for p in FRAUD_TABLE if not p.own_accounts]
        weights = [self._shares[p.name] / p.mean_events for p in episodic]
        episodic_share = math.fsum(self._shares[p.name] for p in episodic)
        target = [fraud_left * self._shares[p.name] / (episodic_share or 1.0) for p in episodic]
        made = [0] * len(episodic)
        while fraud_left > 0:
            if cfg.mix is not None:
                lacking = [
                    max(0.0, t - m) / p.mean_events
                    for t, m, p in zip(target, made, episodic, strict=True)
                ]
                weights = lacking if any(lacking) else weights
            i = rng.choices(range(len(episodic)), weights=weights)[0]
            p = episodic[i]
            episode = self._run(p.name, p.make, rng.choice(customers))
            frauds = [e for e in episode if e.pattern == p.name]
            if not frauds:
                raise ValueError(f"pattern {p.name} made an episode without fraud")
            if len(frauds) > fraud_left:  # the last episode is cut to the exact fraud count
                drop = {id(e) for e in frauds[fraud_left:]}
                episode = [e for e in episode if id(e) not in drop]
            events.extend(episode)
            made[i] += min(len(frauds), fraud_left)
            fraud_left -= min(len(frauds), fraud_left)

        # Hard negatives.
        for h, rate in zip(HARD_NEGATIVES, cfg.rates().values(), strict=True):
            if h.per == "customer":
                k = max(1, math.floor(len(customers) * rate + 1e-9)) if rate > 0 else 0
                for c in rng.sample(customers, k=min(len(customers), k)):
                    if len(events) < cfg.events:
                        events.extend(self._run(h.name, h.make, c))
            else:
                for _ in range(int(cfg.events * rate)):
                    events.extend(self._run(h.name, h.make, rng.choice(customers)))
        events = events[: cfg.events]

        # Ordinary traffic fills the rest, spread over customers by their rate, away from trips.
        regular = cfg.events - len(events)
        for c in rng.choices(customers, weights=[c.share for c in customers], k=regular):
            for _ in range(100):
                t = self.usual_time(c, rng.uniform(0, self.days))
                if not any(a <= t <= b for a, b in c.blocked):
                    break
            events.append(self.event(t, c, c.home, self.amount(c), pattern="legit"))
        events.sort(key=attrgetter("t", "seq"))
        return events

    def generate(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (event, label) pairs in event-time order."""
        cfg = self.cfg
        plan = self._plan()  # before the per-event draws below: they continue its random state
        rng, start, currency = self.rng, self.start, self.region.currency
        fraud = frozenset(FRAUD_PATTERNS)
        for e in plan:
            store = e.store
            local = (start + timedelta(seconds=e.t)).astimezone(store.tz).replace(microsecond=0)
            txn_id = f"{rng.getrandbits(64):016x}-{e.seq:08d}"
            event: dict[str, Any] = {
                "transaction_id": txn_id,
                "customer_id": e.customer.customer_id,
                "store_id": store.store_id,
                "product_id": f"P{rng.randrange(cfg.products) + 1:03d}",
                "amount": e.amount,
                "currency": currency,
                "payment_method": e.method,
                # Stores are points; the terminal's reported position jitters by ~1-3 km.
                "latitude": round(store.latitude + rng.gauss(0, 0.015), 5),
                "longitude": round(store.longitude + rng.gauss(0, 0.015), 5),
                "timestamp": local.isoformat(),
                "schema_version": 2,
            }
            if rng.random() < cfg.v1_share:
                del event["payment_method"]
                event["schema_version"] = 1
            label = {
                "transaction_id": txn_id,
                "is_fraud": e.pattern in fraud,
                "pattern": e.pattern,
            }
            yield event, label
