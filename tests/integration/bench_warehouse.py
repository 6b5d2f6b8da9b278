"""`make bench`: the warehouse's build times, into docs/benchmarks.md (section "warehouse").

1,000,000 generated transactions (and the detector's alerts on them) are loaded into bronze as
the streaming jobs write them, as if streamed over a day (ingested_at spread over it); then
`streamflow warehouse build` (the real command, in a subprocess) builds silver and gold from
nothing; 10,000 more transactions arrive and the same command runs again (incremental); a last
run finds nothing new. Each run's own figures (dbt start-up, model and check time) come from
its `--summary` JSON. PostgreSQL: `--dsn`, else a throwaway Debian server (fsync on).

    uv run python -m tests.integration.bench_warehouse [--events 1000000] [--dsn URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from streamflow_jobs.bench import write_section
from streamflow_jobs.migrate import discover, migrate
from tests.integration.bronze import Bronze, World, make_world
from tests.integration.postgres import temporary_server

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".bench" / "warehouse"
INCREMENT = 10_000


LOAD: dict[str, float] = {}


# dbt prefixes every statement with a comment naming its node: with every statement's duration
# in the server's log (log_min_duration_statement=0), the time PostgreSQL spent per node kind.
_STATEMENT = re.compile(r"duration: ([0-9.]+) ms\s+statement: /\* (\{.*?\}) \*/")


def sql_seconds(log: Path | None, since: int) -> dict[str, float]:
    """Seconds PostgreSQL spent on dbt's statements in ``log`` after byte ``since``, by node kind
    (model, test, source, operation)."""
    out: dict[str, float] = {}
    if log is None:
        return out
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", errors="replace")
    for ms, comment in _STATEMENT.findall(text):
        node = str(json.loads(comment).get("node_id") or "operation.")
        for key in (node.split(".", 1)[0], node):  # per kind, and per node (in the JSON)
            out[key] = out.get(key, 0.0) + float(ms) / 1000
    return out


def settle(dsn: str) -> None:
    """What the hours between two scheduled builds give a real server: autovacuum and analyze
    done, dirty pages checkpointed (else the next build competes with them; not timed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def cli_build(dsn: str, name: str, log: Path | None = None) -> tuple[float, dict[str, Any]]:
    settle(dsn)
    LOAD[name] = os.getloadavg()[0]  # the machine is shared: say how busy it was
    since = log.stat().st_size if log else 0
    summary = WORK / f"{name}.json"
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow_jobs.cli",
            "warehouse",
            "build",
            "--dsn",
            dsn,
            "--summary",
            str(summary),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: warehouse build failed: {done.stderr.strip()}")
    result: dict[str, Any] = orjson.loads(summary.read_bytes())
    result["sql_seconds"] = sql_seconds(log, since)
    summary.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return wall, result


def load(dsn: str, world: World, bronze: Bronze, events: int) -> tuple[int, int]:
    """The history, streamed over the day before: bronze rows' ingested_at spread evenly over
    24 hours (as a stream writes them; the alerts a moment after their transactions)."""
    base = world.events[:events]
    ids = {e.txn.transaction_id for e in base}
    start = datetime.now(UTC) - timedelta(days=2)
    step = timedelta(days=1) / max(1, len(base))
    arrived = {e.txn.transaction_id: start + i * step for i, e in enumerate(base)}
    txns = [(*row[:-1], arrived[row[3]]) for row in bronze.transaction_rows(base)]
    alerts = [a for a in world.alerts if a.transaction_id in ids]
    alert_rows = [
        (*row[:-1], arrived[row[3]] + timedelta(milliseconds=50))
        for row in bronze.alert_rows(alerts)
    ]
    print("loading bronze...", flush=True)
    bronze.write(txns, alert_rows)
    return len(base), len(alerts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dsn", help="a database to use (emptied of nothing: give a fresh one)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.dsn:
        run(args.dsn, args.events, None)
        return
    with temporary_server(fsync=True, settings={"log_min_duration_statement": "0"}) as server:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            (data,) = conn.execute("SHOW data_directory").fetchone() or ("",)
        run(server.rsplit("/", 1)[0] + f"/{name}", args.events, Path(data).parent / "log")


def run(dsn: str, events: int, log: Path | None) -> None:
    migrate(dsn, discover())
    print(f"generating {events + INCREMENT:,} events and the detector's decisions...", flush=True)
    # 300 days from the generator's start (January 2026): all of it before "now", as history is.
    world = make_world(events + INCREMENT, seed=42, customers=1000, days=300)
    bronze = Bronze(dsn)
    loaded, alerts = load(dsn, world, bronze, events)
    print("full build...", flush=True)
    full_wall, full = cli_build(dsn, "full", log)
    # The next 10,000 arrive now, with their alerts.
    extra = world.events[events:]
    extra_ids = {e.txn.transaction_id for e in extra}
    bronze.write(
        bronze.transaction_rows(extra),
        bronze.alert_rows(a for a in world.alerts if a.transaction_id in extra_ids),
    )
    print("incremental build...", flush=True)
    inc_wall, inc = cli_build(dsn, "incremental", log)
    print("build with nothing new...", flush=True)
    noop_wall, noop = cli_build(dsn, "noop", log)
    with psycopg.connect(dsn) as conn:
        (facts,) = conn.execute("SELECT count(*) FROM gold.fact_transactions").fetchone() or (0,)
    assert facts == events + len(extra), facts

    def row(what: str, target: str, wall: float, s: dict[str, Any]) -> str:
        sec, sql = s["seconds"], s["sql_seconds"]
        in_pg = (
            f"{sql.get('model', 0):.1f} s / {sql.get('test', 0):.1f} s" if sql else "not measured"
        )
        return (
            f"| {what} | {target} | {wall:.1f} s | {sec['dbt_startup']:.1f} s | "
            f"{sec['nodes']:.1f} s | {sec['models']:.1f} s | {sec['checks']:.1f} s | {in_pg} | "
            f"{wall - sec['total']:.1f} s |"
        )

    cpu = platform.processor() or platform.machine()
    text = "\n".join(
        [
            "## Warehouse",
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench` "
            "(`uv run python -m tests.integration.bench_warehouse`) on "
            f"{cpu}, {os.cpu_count()} cores (shared with other work), PostgreSQL "
            f"{server_version(dsn)} (Debian's, default settings, fsync on), dbt "
            f"{dbt_version()}, 4 dbt threads. Bronze: {loaded:,} generated transactions "
            f"(seed 42, 1,000 customers, 300 days) and the detector's {alerts:,} alerts on them, "
            "loaded as the streaming jobs write them; then 10,000 more arrive. Each figure is "
            "one run "
            "of the real command, `streamflow warehouse build --dsn ...` (migrations, then "
            f"`dbt build`: {full['models']} models and "
            f"{sum(full['checks'].values())} checks).",
            "",
            "| build | target | whole command | dbt start-up | dbt nodes (wall) | models "
            "(sum) | checks (sum) | in PostgreSQL: models / checks | interpreter + imports |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            row(
                f"bronze -> silver -> gold, {loaded:,} transactions, from nothing",
                "<= 60 s",
                full_wall,
                full,
            ),
            row(
                f"incremental: {len(extra):,} new transactions on top",
                "<= 10 s (models <= 2 s)",
                inc_wall,
                inc,
            ),
            row("nothing new", "", noop_wall, noop),
            "",
            "dbt start-up = from the dbt invocation to its first node (project load with partial "
            "parsing, adapter, relation cache, on-run-start hook); the first build parses the "
            "project in full. Models and checks are dbt's own execution times added up (4 "
            "threads run them side by side, so the sums can exceed the wall time of the node "
            "phase); they include dbt's own work per model (rendering, introspection, a temporary "
            "table, hooks). In PostgreSQL = the time the server spent executing the statements "
            "of the models and of the checks (every statement's duration from the server log, "
            "attributed by dbt's query comment). Interpreter + imports = the rest of the "
            "command (Python, dbt's imports, "
            "migrations check, writing dbt's artifacts). Before each build the bench runs VACUUM "
            "ANALYZE and CHECKPOINT (untimed), what the time between scheduled builds gives a "
            "server. The machine's 1-minute load average "
            "when each build started (2 cores): "
            + ", ".join(f"{k} {v:.1f}" for k, v in LOAD.items())
            + ".",
            "",
        ]
    )
    write_section("warehouse", text)
    print(text)


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]


def dbt_version() -> str:
    import dbt.version  # noqa: PLC0415

    return str(dbt.version.__version__)


if __name__ == "__main__":
    main()
