from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamflow_jobs.generator import Generator, GeneratorConfig


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """5,000 generated events and labels (shared: generation is deterministic)."""
    directory = tmp_path_factory.mktemp("world")
    gen = Generator(GeneratorConfig(events=5000, seed=3, customers=100))
    events, labels = directory / "tx.jsonl", directory / "labels.jsonl"
    with events.open("wb") as ev, labels.open("wb") as lab:
        for event, label in gen.generate():
            ev.write(orjson.dumps(event) + b"\n")
            lab.write(orjson.dumps(label) + b"\n")
    return events, labels, gen.blacklist
