"""The generator: deterministic, labelled patterns in their own file, hard negatives present."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamflow_jobs.generator import FRAUD_PATTERNS, Generator, GeneratorConfig

pytestmark = pytest.mark.unit


def test_same_seed_same_stream() -> None:
    a = list(Generator(GeneratorConfig(events=2000, seed=5, customers=50)).generate())
    b = list(Generator(GeneratorConfig(events=2000, seed=5, customers=50)).generate())
    assert a == b


def test_patterns_counts_and_no_label_leak(small_world: tuple[Path, Path, list[str]]) -> None:
    events, labels, blacklist = small_world
    rows = [orjson.loads(x) for x in labels.read_bytes().splitlines()]
    patterns = Counter(r["pattern"] for r in rows)
    assert len(rows) == 5000
    assert set(FRAUD_PATTERNS) <= set(patterns), patterns
    assert patterns["legit_travel"] > 0 and patterns["legit_big_purchase"] > 0
    assert sum(r["is_fraud"] for r in rows) == round(5000 * 0.02)
    first = orjson.loads(events.read_bytes().splitlines()[0])
    assert not {"is_fraud", "pattern", "label"} & set(first)
    assert blacklist


def test_events_are_in_event_time_order(small_world: tuple[Path, Path, list[str]]) -> None:
    from datetime import datetime  # noqa: PLC0415

    events, _, _ = small_world
    times = [
        datetime.fromisoformat(orjson.loads(x)["timestamp"])
        for x in events.read_bytes().splitlines()
    ]
    assert times == sorted(times)
