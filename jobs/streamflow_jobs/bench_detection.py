"""`make bench-detection`: detection quality on worlds the models never saw, per model kind.

Each world is generated with its own seed, fraud rate, customer count, time span and region;
none is the reference world (seed 7) the shipped models were trained on by `make model` (the
supervised gradient-boosted trees and the unsupervised IsolationForest). The default policy is
replayed over every world with each: average precision, precision and recall at the default
policy, the alert rate per pattern. Throughput: replay with each model kind, and with a shadow
challenger (the other kind). Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamflow_jobs.bench import CLI, WORK, sh, write_section

TRAIN_SEED = 7


@dataclass(frozen=True)
class World:
    name: str
    options: tuple[str, ...]


WORLDS = (
    World("seed 101, 2 % fraud, 800 customers, 7 days, brazil",
          ("--seed", "101", "--fraud-rate", "0.02", "--customers", "800")),
    World("seed 202, 0.5 % fraud, 1500 customers, 30 days, usa",
          ("--seed", "202", "--fraud-rate", "0.005", "--customers", "1500", "--days", "30",
           "--region", "usa")),
    World("seed 303, 5 % fraud, 600 customers, 14 days, europe, 40 stores, 15 % night owls",
          ("--seed", "303", "--fraud-rate", "0.05", "--customers", "600", "--days", "14",
           "--region", "europe", "--stores", "40", "--night-owl-share", "0.15")),
)  # fmt: skip
EVENTS = "60000"


def _cli(*args: str) -> None:
    sh(*args)


def shipped_models() -> dict[str, Path]:
    """Both shipped kinds, as `make model` trains them on the reference world (seed 7)."""
    from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, SHIPPED_FOREST_PATH  # noqa: PLC0415

    return {"gradient boosting": DEFAULT_MODEL_PATH, "isolation forest": SHIPPED_FOREST_PATH}


def replay_world(world: Path, model: Path, *extra: str) -> tuple[dict[str, Any], float]:
    summary = WORK / "world.summary.json"
    started = time.perf_counter()
    _cli("replay", "--input", str(world), "--output", str(WORK / "world.decisions.jsonl"),
         "--rules", str(world.with_suffix(".rules.yaml")), "--model", str(model),
         "--labels", str(world.with_suffix(".labels.jsonl")), "--summary", str(summary),
         *extra)  # fmt: skip
    seconds = time.perf_counter() - started
    result: dict[str, Any] = orjson.loads(summary.read_bytes())
    return result, seconds


def main() -> None:
    WORK.mkdir(exist_ok=True)
    models = shipped_models()
    worlds = []
    for i, world in enumerate(WORLDS):
        path = WORK / f"world{i}.jsonl"
        _cli("generate", "--events", EVENTS, *world.options, "--output", str(path),
             "--labels", str(path.with_suffix(".labels.jsonl")),
             "--rules-output", str(path.with_suffix(".rules.yaml")))  # fmt: skip
        worlds.append((world, path))
    lines = [
        "Detection quality on generated worlds none of the models was trained on (the shipped",
        f"models, both trained on the seed-{TRAIN_SEED} reference world, 200k events), {EVENTS}",
        "events each, default policy",
        "(`RulesConfig()` with each world's blacklist). Pattern figures: share alerted.",
        "",
        "| world | model | AP | precision | recall | per pattern |",
        "|---|---|---|---|---|---|",
    ]
    speed: dict[str, list[float]] = {}
    for world, path in worlds:
        for kind, model in models.items():
            summary, seconds = replay_world(path, model)
            m = summary["metrics"]
            speed.setdefault(kind, []).append(summary["decisions"] / seconds)
            patterns = ", ".join(
                f"{name} {v['recall']:.2f}"
                for name, v in sorted(m["per_pattern"].items())
                if "recall" in v
            )
            legit = m["per_pattern"].get("legit", {}).get("alert_rate")
            lines.append(
                f"| {world.name} | {kind} | {m['average_precision']:.4f} | "
                f"{m['precision']:.4f} | {m['recall']:.4f} | {patterns}; legit alerted {legit} |"
            )
    world, path = worlds[0]
    _, shadow_seconds = replay_world(
        path, models["gradient boosting"], "--shadow-model", str(models["isolation forest"])
    )
    decisions = int(EVENTS)
    lines += [
        "",
        "Replay throughput (whole CLI run: start-up, parse, rules, model, write; events/s, "
        "median over the worlds):",
        "",
    ]
    for kind, values in speed.items():
        lines.append(f"- {kind}: {sorted(values)[len(values) // 2]:,.0f}")
    lines.append(
        f"- gradient boosting with the isolation forest as shadow: "
        f"{decisions / shadow_seconds:,.0f} (first world)"
    )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `make bench-detection` "
        f"({' '.join(CLI[1:])} ...).",
    ]
    write_section(
        "detection", "## Detection quality per world and model kind\n\n" + "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
