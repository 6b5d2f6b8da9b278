"""The generator: deterministic worlds, labelled patterns in their own file, hard negatives
present, options honoured (fraud rate, mix, span, region, stores), the blacklist known up front,
bad options refused in one line."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamflow_jobs.generator import (
    FRAUD_PATTERNS,
    FRAUD_TABLE,
    HARD_NEGATIVES,
    PATTERNS,
    Generator,
    GeneratorConfig,
    parse_weights,
)
from streamflow_jobs.rules.evaluator import haversine_km

pytestmark = pytest.mark.unit

Rows = list[tuple[dict[str, Any], dict[str, Any]]]


def world(**options: Any) -> tuple[Generator, Rows]:
    gen = Generator(GeneratorConfig(**options))
    return gen, list(gen.generate())


def fraud_shares(rows: Rows) -> dict[str, float]:
    counts = Counter(label["pattern"] for _, label in rows if label["is_fraud"])
    total = sum(counts.values())
    return {p: counts[p] / total for p in FRAUD_PATTERNS}


# ---- determinism and the reference world ---------------------------------------------------------
def test_same_seed_same_stream() -> None:
    a = list(Generator(GeneratorConfig(events=2000, seed=5, customers=50)).generate())
    b = list(Generator(GeneratorConfig(events=2000, seed=5, customers=50)).generate())
    assert a == b


def test_other_seed_other_world_and_generate_is_repeatable() -> None:
    options: dict[str, Any] = {"events": 3000, "customers": 60, "fraud_rate": 0.03}
    options["mix"] = {"card_testing": 1.0}
    gen = Generator(GeneratorConfig(seed=1, **options))
    first, again = list(gen.generate()), list(gen.generate())
    assert first == again
    other = list(Generator(GeneratorConfig(seed=2, **options)).generate())
    assert [e for e, _ in other] != [e for e, _ in first]


def test_the_reference_world_is_unchanged_byte_for_byte() -> None:
    """Worlds made with the original options are exactly what the generator made before it became
    a simulator (this digest was computed with that generator): the shipped model is trained on
    such a world and tests/test_model.py reproduces it."""
    gen = Generator(GeneratorConfig(events=3000, seed=17, customers=80))
    assert gen.blacklist == ["C00012"]
    digest = hashlib.sha256()
    for event, label in gen.generate():
        digest.update(orjson.dumps(event) + b"\n" + orjson.dumps(label) + b"\n")
    assert digest.hexdigest() == "b9e64354806f8e01ec1a08c4ebb5fb0805354ee7a489f8524e735a4fb0be9114"


# ---- labels and patterns -------------------------------------------------------------------------
def test_patterns_counts_and_no_label_leak(small_world: tuple[Path, Path, list[str]]) -> None:
    events, labels, blacklist = small_world
    rows = [orjson.loads(x) for x in labels.read_bytes().splitlines()]
    patterns = Counter(r["pattern"] for r in rows)
    assert len(rows) == 5000
    assert set(FRAUD_PATTERNS) <= set(patterns), patterns
    assert patterns["legit_travel"] > 0 and patterns["legit_big_purchase"] > 0
    assert sum(r["is_fraud"] for r in rows) == round(5000 * 0.02)
    assert all(set(r) == {"transaction_id", "is_fraud", "pattern"} for r in rows)
    assert all(r["is_fraud"] == (r["pattern"] in FRAUD_PATTERNS) for r in rows)
    first = orjson.loads(events.read_bytes().splitlines()[0])
    assert not {"is_fraud", "pattern", "label"} & set(first)
    assert blacklist


def test_events_are_in_event_time_order(small_world: tuple[Path, Path, list[str]]) -> None:
    events, _, _ = small_world
    times = [
        datetime.fromisoformat(orjson.loads(x)["timestamp"])
        for x in events.read_bytes().splitlines()
    ]
    assert times == sorted(times)


def test_one_table_names_every_pattern() -> None:
    assert tuple(p.name for p in FRAUD_TABLE) == FRAUD_PATTERNS
    assert len(set(PATTERNS)) == len(PATTERNS)
    assert math.isclose(math.fsum(p.share for p in FRAUD_TABLE), 1.0)
    assert [p.name for p in FRAUD_TABLE if p.own_accounts] == ["blacklisted_customer"]
    assert {h.name for h in HARD_NEGATIVES} == {"legit_travel", "legit_big_purchase"}


@pytest.mark.parametrize(
    ("seed", "fraud_rate", "customers", "days"),
    [(1, 0.005, 500, None), (2, 0.02, 200, 30.0), (3, 0.05, 1000, 90.0)],
)
def test_every_pattern_appears_in_worlds_of_any_fraud_rate(
    seed: int, fraud_rate: float, customers: int, days: float | None
) -> None:
    _, rows = world(events=20_000, seed=seed, fraud_rate=fraud_rate, customers=customers, days=days)
    patterns = Counter(label["pattern"] for _, label in rows)
    assert set(FRAUD_PATTERNS) <= set(patterns), patterns


# ---- options honoured ----------------------------------------------------------------------------
@pytest.mark.parametrize("fraud_rate", [0.0, 0.005, 0.013, 0.05, 0.2])
@pytest.mark.parametrize("seed", [4, 5])
def test_the_fraud_rate_is_exact(fraud_rate: float, seed: int) -> None:
    _, rows = world(events=8000, seed=seed, fraud_rate=fraud_rate, customers=300)
    assert len(rows) == 8000
    assert sum(label["is_fraud"] for _, label in rows) == round(8000 * fraud_rate)


@pytest.mark.parametrize(
    "mix",
    [
        {"velocity_burst": 2.0, "impossible_travel": 1.0},
        {"card_testing": 1.0, "unusual_hour": 1.0, "account_takeover": 2.0},
        {"high_value_spike": 3.0, "blacklisted_customer": 1.0},
        {"blacklisted_customer": 1.0},
    ],
)
@pytest.mark.parametrize("seed", [6, 7])
def test_the_mix_is_honoured(mix: dict[str, float], seed: int) -> None:
    gen, rows = world(events=40_000, seed=seed, fraud_rate=0.015, customers=800, mix=mix)
    shares = fraud_shares(rows)
    total = sum(mix.values())
    for name in FRAUD_PATTERNS:
        want = mix.get(name, 0.0) / total
        if want == 0:
            assert shares[name] == 0, name
        else:  # within about one episode of the 600 fraud events
            assert abs(shares[name] - want) <= 0.03, (name, shares[name], want)
    assert bool(gen.blacklist) == ("blacklisted_customer" in mix)


def test_the_default_mix_is_about_equal_shares() -> None:
    _, rows = world(events=100_000, seed=8, fraud_rate=0.03)
    for p in FRAUD_TABLE:
        assert abs(fraud_shares(rows)[p.name] - p.share) <= 0.04, p.name


@pytest.mark.parametrize("days", [7.0, 30.0, 120.0])
def test_the_time_span_is_honoured(days: float) -> None:
    gen, rows = world(events=6000, seed=9, customers=200, days=days)
    times = sorted(datetime.fromisoformat(e["timestamp"]) for e, _ in rows)
    # Nearly all events lie in the span; a trip that starts near its end may outlast it.
    core = (times[-len(times) // 200] - times[len(times) // 200]).total_seconds() / 86_400
    whole = (times[-1] - times[0]).total_seconds() / 86_400
    assert gen.days == days
    assert days - 1.5 <= core <= days and whole <= days + 4, (core, whole)


def test_regions_and_stores() -> None:
    gen, rows = world(events=6000, seed=10, customers=300, region="usa", stores=25)
    stores = {e["store_id"] for e, _ in rows}
    assert len(gen.stores) == 25 and stores <= {s.store_id for s in gen.stores}
    assert len(stores) > 20
    assert {e["currency"] for e, _ in rows} == {"USD"}
    offsets = {e["timestamp"][-6:] for e, _ in rows}
    assert offsets == {"-05:00", "-06:00", "-07:00", "-08:00"}
    # Usual hours are on the customer's home clock: ordinary purchases happen by day locally.
    hours = Counter(
        datetime.fromisoformat(e["timestamp"]).hour for e, lab in rows if lab["pattern"] == "legit"
    )
    assert sum(hours[h] for h in range(8, 24)) / sum(hours.values()) > 0.85


def test_activity_levels_spread_with_the_option() -> None:
    def busiest_share(spread: float) -> float:
        _, rows = world(events=20_000, seed=11, customers=400, activity_spread=spread)
        per = Counter(e["customer_id"] for e, lab in rows if lab["pattern"] == "legit")
        top = sorted(per.values(), reverse=True)[:40]  # the busiest tenth
        return sum(top) / sum(per.values())

    assert busiest_share(0.0) < 0.15 < busiest_share(0.5) < busiest_share(1.2)


# ---- the blacklist -------------------------------------------------------------------------------
def test_the_blacklist_is_known_before_generate_and_matches_the_labels() -> None:
    gen = Generator(GeneratorConfig(events=10_000, seed=12, customers=200, fraud_rate=0.04))
    before = list(gen.blacklist)
    assert before
    rows = list(gen.generate())
    assert gen.blacklist == before
    by_customer: dict[str, set[str]] = defaultdict(set)
    for event, label in rows:
        by_customer[event["customer_id"]].add(label["pattern"])
    owners = sorted(c for c, p in by_customer.items() if "blacklisted_customer" in p)
    assert owners == before
    assert all(by_customer[c] == {"blacklisted_customer"} for c in before)


# ---- the patterns stay plausible -----------------------------------------------------------------
@pytest.mark.parametrize("region", ["brazil", "usa", "europe"])
def test_patterns_look_like_what_they_are_named(region: str) -> None:
    _, rows = world(events=30_000, seed=13, customers=300, fraud_rate=0.04, region=region)
    last: dict[str, tuple[datetime, float, float, str]] = {}
    fast: Counter[str] = Counter()
    burst: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for event, label in rows:
        when = datetime.fromisoformat(event["timestamp"])
        c, p = event["customer_id"], label["pattern"]
        if c in last:
            t0, lat, lon, before = last[c]
            km = haversine_km(lat, lon, event["latitude"], event["longitude"])
            hours = (when - t0).total_seconds() / 3600
            # An episode's first event against what came before it.
            kind = p if p != before else f"{p} (again)"
            seen[kind] += 1
            fast[kind] += km > 300 and km > 500 * hours
            burst[kind] += hours < 300 / 3600
        last[c] = (when, event["latitude"], event["longitude"], p)
    # Physically impossible journeys: the travelling card; never an ordinary purchase's doing.
    assert fast["impossible_travel"] >= 0.9 * seen["impossible_travel"], (fast, seen)
    assert fast["legit_big_purchase"] <= 0.05 * seen["legit_big_purchase"]
    assert fast["legit (again)"] <= 0.001 * seen["legit (again)"]
    # Bursts: purchases minutes apart.
    assert burst["velocity_burst (again)"] >= 0.9 * seen["velocity_burst (again)"]
    assert burst["card_testing (again)"] >= 0.9 * seen["card_testing (again)"]
    assert burst["legit (again)"] <= 0.1 * seen["legit (again)"]


# ---- bad options: a one-line error ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fraud_rate": 0.7}, "fraud rate must be in [0, 0.5)"),
        ({"fraud_rate": math.nan}, "fraud rate"),
        ({"events": 0}, "events must be in [1,"),
        ({"customers": 0}, "customers must be in [1,"),
        ({"days": 0.5}, "days must be in [1, 3660]"),
        ({"stores": 1}, "stores must be in [2, 1000]"),
        ({"region": "mars"}, "unknown region 'mars'"),
        ({"mix": {"phishing": 1.0}}, "unknown fraud pattern 'phishing'"),
        ({"mix": {"card_testing": 0.0}}, "at least one pattern"),
        ({"mix": {"card_testing": -1.0}}, "weight of card_testing"),
        ({"hard_negatives": {"legit_travel": 2.0}}, "rate of legit_travel"),
        ({"activity_spread": 5.0}, "activity spread"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as info:
        GeneratorConfig(**options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_fraud_only_from_blacklisted_accounts() -> None:
    mix = {"blacklisted_customer": 1.0}
    gen, rows = world(events=1000, customers=3, fraud_rate=0.45, mix=mix)
    assert sum(label["is_fraud"] for _, label in rows) == 450
    assert len(gen.blacklist) == 2
    with pytest.raises(ValueError, match="at least 2 customers, got 1"):
        Generator(GeneratorConfig(events=1000, customers=1, fraud_rate=0.1, mix=mix))


def test_the_config_is_frozen() -> None:
    mix = {"card_testing": 1.0}
    config = GeneratorConfig(mix=mix)
    mix["velocity_burst"] = 5.0
    assert dict(config.mix or {}) == {"card_testing": 1.0}
    with pytest.raises(TypeError):
        config.mix["velocity_burst"] = 5.0  # type: ignore[index]
    assert config == GeneratorConfig(mix={"card_testing": 1.0})


def test_weights_are_parsed_with_one_line_errors() -> None:
    assert parse_weights("a=2, b = 0.5", ("a", "b"), "--mix") == {"a": 2.0, "b": 0.5}
    for text, message in [
        ("a", "expected name=number"),
        ("c=1", "unknown name 'c'"),
        ("a=1,a=2", "a given twice"),
        ("a=x", "is not a number"),
        ("a=1," * 600, "too long"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_weights(text, ("a", "b"), "--mix")


def cli(*args: str | Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", "generate", *map(str, args)],
        capture_output=True,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fraud-rate", "0.9"], "fraud rate must be in [0, 0.5)"),
        (["--mix", "velocity_burst=2,teleport=1"], "--mix: unknown name 'teleport'"),
        (["--mix", "velocity_burst"], "--mix: expected name=number"),
        (["--days", "0"], "days must be in [1, 3660]"),
        (["--stores", "5000"], "stores must be in [2, 1000]"),
        (["--region", "atlantis"], "unknown region 'atlantis'"),
        (["--hard-negatives", "legit_travel=abc"], "is not a number"),
        (["--events", "-3"], "events must be in [1,"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    out, labels = tmp_path / "tx.jsonl", tmp_path / "labels.jsonl"
    code, said = cli("--output", out, "--labels", labels, *args)
    assert code == 2, said
    assert said.strip().count("\n") == 0 and said.startswith("error:"), said
    assert message in said
    assert not out.exists() and not labels.exists()


def test_cli_generates_a_world_with_its_options(tmp_path: Path) -> None:
    out, labels, rules = tmp_path / "tx.jsonl", tmp_path / "labels.jsonl", tmp_path / "rules.yaml"
    code, said = cli(
        "--output", out, "--labels", labels, "--rules-output", rules,
        "--events", "4000", "--seed", "3", "--customers", "150", "--fraud-rate", "0.05",
        "--days", "21", "--mix", "velocity_burst=2,impossible_travel=1,blacklisted_customer=1",
        "--region", "europe", "--stores", "14",
    )  # fmt: skip
    assert code == 0, said
    rows = [orjson.loads(x) for x in labels.read_bytes().splitlines()]
    assert sum(r["is_fraud"] for r in rows) == 200
    assert {r["pattern"] for r in rows if r["is_fraud"]} == {
        "velocity_burst",
        "impossible_travel",
        "blacklisted_customer",
    }
    events = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert {e["currency"] for e in events} == {"EUR"} and len({e["store_id"] for e in events}) > 10
    expected = Generator(
        GeneratorConfig(
            events=4000,
            seed=3,
            customers=150,
            fraud_rate=0.05,
            days=21.0,
            region="europe",
            stores=14,
            mix={"velocity_burst": 2, "impossible_travel": 1, "blacklisted_customer": 1},
        )
    )
    assert events == [e for e, _ in expected.generate()]
    assert all(c in rules.read_text() for c in expected.blacklist) and expected.blacklist
