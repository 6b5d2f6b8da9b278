"""``streamflow warehouse build``: the migrations (bronze), then ``dbt build`` (silver and gold,
models and their tests) against one database.

dbt runs in this process (``dbtRunner``): no second interpreter start, and dbt's partial parsing
keeps its parsed project in a per-database directory under ``~/.cache/streamflow/dbt/``, so a
build after the first re-parses nothing (see docs/benchmarks.md for what start-up costs). Builds
of one database are serialised by a PostgreSQL advisory lock: two at once would read the same
watermarks and each add the same batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from streamflow_jobs import migrate

_PACKAGED = Path(__file__).resolve().parents[1] / "sql" / "dbt"
_CHECKOUT = Path(__file__).resolve().parents[3] / "sql" / "dbt"
DBT_PROJECT_DIR = _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT
REPO_ROOT = Path(__file__).resolve().parents[3]
NO_LOCAL_DATABASE = "no local database: run `streamflow infra up` or pass --dsn"
_LOCK_ID = int.from_bytes(hashlib.sha256(b"streamflow.warehouse").digest()[:8], "big", signed=True)
# Libpq parameters the dbt profile carries; anything else in a DSN is refused, not dropped.
_PROFILE_KEYS = {"host", "hostaddr", "port", "user", "password", "dbname", "sslmode"}


class WarehouseError(RuntimeError):
    """A one-line reason the warehouse command could not do its work."""


def local_dsn() -> str:
    """The DSN of the database `streamflow infra up` runs."""
    from streamflow_jobs.infra import InfraError, postgres_dsn  # noqa: PLC0415

    try:
        return postgres_dsn()
    except (InfraError, KeyError, TypeError) as exc:
        raise WarehouseError(NO_LOCAL_DATABASE) from exc


def connection_params(dsn: str) -> dict[str, str]:
    """The DSN's parameters, refusing what the dbt profile cannot carry (said without echoing
    the DSN: it holds a password)."""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        raise WarehouseError("the DSN is not a valid libpq URL or key=value string") from exc
    unknown = sorted(set(params) - _PROFILE_KEYS)
    if unknown:
        raise WarehouseError(f"DSN parameters not supported by the warehouse build: {unknown}")
    if "," in params.get("host", ""):
        raise WarehouseError("the DSN names several hosts; give the primary's")
    return params


def dbt_environment(dsn: str, threads: int | None = None) -> dict[str, str]:
    """The variables sql/dbt/profiles.yml reads."""
    p = connection_params(dsn)
    env = {
        "STREAMFLOW_DBT_HOST": p.get("host") or p.get("hostaddr") or "localhost",
        "STREAMFLOW_DBT_PORT": p.get("port", "5432"),
        "STREAMFLOW_DBT_USER": p.get("user") or os.environ.get("USER", "postgres"),
        "DBT_ENV_SECRET_STREAMFLOW_PASSWORD": p.get("password", ""),
        "STREAMFLOW_DBT_DBNAME": p.get("dbname") or p.get("user") or "postgres",
        "STREAMFLOW_DBT_SSLMODE": p.get("sslmode", "prefer"),
        # No tracking calls from a warehouse job (dbt would try to reach the internet).
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    if threads is not None:
        env["STREAMFLOW_DBT_THREADS"] = str(threads)
    return env


def work_dir(env: dict[str, str]) -> Path:
    """dbt's target and log directory for this project and database: partial parsing is only
    valid for the connection it parsed with, and the packaged project may be read-only."""
    import dbt.version  # noqa: PLC0415

    who = "|".join(
        [
            dbt.version.__version__,
            str(DBT_PROJECT_DIR),
            env["STREAMFLOW_DBT_HOST"],
            env["STREAMFLOW_DBT_PORT"],
            env["STREAMFLOW_DBT_USER"],
            env["STREAMFLOW_DBT_DBNAME"],
        ]
    )
    base = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache" / "streamflow"))
    path = base / "dbt" / hashlib.sha256(who.encode()).hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class NodeResult:
    name: str  # e.g. silver.transactions, or a test's name
    kind: str  # model | test | source | ...
    status: str  # success | error | skipped | pass | warn | fail
    seconds: float
    started: float | None  # epoch seconds
    finished: float | None
    failures: int | None = None
    message: str | None = None


@dataclass
class BuildReport:
    applied_migrations: list[str] = field(default_factory=list)
    nodes: list[NodeResult] = field(default_factory=list)
    error: str | None = None  # a problem before or around dbt (parse error, connection...)
    seconds_migrations: float = 0.0
    seconds_dbt: float = 0.0  # the dbt invocation, start-up included
    seconds_startup: float = 0.0  # import + parse + hooks: invocation start -> first node
    seconds_nodes: float = 0.0  # first node started -> last node finished (wall clock)
    seconds_models: float = 0.0  # the models' own execution times, added up
    seconds_tests: float = 0.0  # the checks' own execution times, added up
    seconds_total: float = 0.0

    def of(self, kind: str, *statuses: str) -> list[NodeResult]:
        return [n for n in self.nodes if n.kind == kind and (not statuses or n.status in statuses)]

    @property
    def blocking(self) -> list[NodeResult]:
        """Nodes that make the build fail: a model error, a failing blocking check."""
        return [n for n in self.nodes if n.status in ("error", "fail")]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.blocking

    def reason(self) -> str:
        """One line: why the build failed (the checks named, with what they measured)."""
        if self.error:
            return self.error
        parts = []
        for n in self.blocking:
            if n.kind == "test" and n.status == "fail":
                parts.append(f"{n.name} ({n.failures} failing)")
            else:
                first = (n.message or "").strip().splitlines()
                parts.append(f"{n.kind} {n.name}: {first[0] if first else n.status}")
        failed_checks = [n for n in self.blocking if n.kind == "test"]
        what = "quality gate failed" if failed_checks else "build failed"
        return f"{what}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": None if self.ok else self.reason(),
            "applied_migrations": self.applied_migrations,
            "models": len(self.of("model")),
            "checks": {s: len(self.of("test", s)) for s in ("pass", "warn", "fail", "error")},
            "seconds": {
                "total": round(self.seconds_total, 3),
                "migrations": round(self.seconds_migrations, 3),
                "dbt": round(self.seconds_dbt, 3),
                "dbt_startup": round(self.seconds_startup, 3),
                "nodes": round(self.seconds_nodes, 3),
                "models": round(self.seconds_models, 3),
                "checks": round(self.seconds_tests, 3),
            },
            "nodes": [
                {"name": n.name, "kind": n.kind, "status": n.status, "seconds": round(n.seconds, 3)}
                for n in self.nodes
            ],
        }

    def summary(self) -> str:
        models = self.of("model")
        tests = self.of("test")
        counts = {s: len(self.of("test", s)) for s in ("pass", "warn", "fail", "error")}
        return (
            f"{len([m for m in models if m.status == 'success'])}/{len(models)} models, "
            f"{len(tests)} checks ({counts['pass']} pass, {counts['warn']} warn, "
            f"{counts['fail']} fail, {counts['error']} error) in {self.seconds_total:.1f} s "
            f"(migrations {self.seconds_migrations:.2f} s, dbt start-up "
            f"{self.seconds_startup:.2f} s, nodes {self.seconds_nodes:.2f} s: models "
            f"{self.seconds_models:.2f} s + checks {self.seconds_tests:.2f} s of work)"
        )


def _nodes(result: Any) -> list[NodeResult]:
    out = []
    for r in getattr(result, "results", None) or []:
        node = r.node
        started = finished = None
        for t in r.timing or []:
            if t.started_at is not None:
                s = t.started_at.timestamp()
                started = s if started is None else min(started, s)
            if t.completed_at is not None:
                f = t.completed_at.timestamp()
                finished = f if finished is None else max(finished, f)
        kind = str(node.resource_type)
        name = f"{node.schema}.{node.alias}" if kind in ("model", "seed", "snapshot") else node.name
        out.append(
            NodeResult(
                name=name,
                kind=kind,
                status=str(r.status),
                seconds=float(r.execution_time or 0.0),
                started=started,
                finished=finished,
                failures=r.failures,
                message=r.message,
            )
        )
    return out


def _span(nodes: list[NodeResult]) -> tuple[float, float] | None:
    starts = [n.started for n in nodes if n.started is not None]
    ends = [n.finished for n in nodes if n.finished is not None]
    return (min(starts), max(ends)) if starts and ends else None


def run_dbt(args: list[str], dsn: str, threads: int | None = None) -> tuple[Any, float]:
    """Invoke dbt in this process against ``dsn``; returns (dbtRunnerResult, epoch at start)."""
    env = dbt_environment(dsn, threads)
    with _environment(env):
        from dbt.cli.main import dbtRunner  # noqa: PLC0415

        work = work_dir(env)
        started = time.time()
        result = dbtRunner().invoke(
            [
                *args,
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(work / "target"),
                "--log-path",
                str(work / "logs"),
            ]
        )
    return result, started


def manifest() -> Path:
    """dbt's manifest of this project (``dbt parse``, no database needed), cached per content of
    the project and dbt version: what the Airflow DAG renders its tasks from, so parsing the DAG
    file costs a file read, not a dbt run, once the manifest exists."""
    import dbt.version  # noqa: PLC0415

    digest = hashlib.sha256(dbt.version.__version__.encode())
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        rel = path.relative_to(DBT_PROJECT_DIR)
        if path.is_file() and rel.parts[0] not in ("target", "logs"):
            digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    base = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache" / "streamflow"))
    out = base / "dbt" / f"manifest-{digest.hexdigest()[:16]}" / "manifest.json"
    if out.is_file():
        return out
    out.parent.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".manifest-", dir=out.parent.parent))
    # Parsing reads the profile but never connects: placeholder connection values.
    env = dbt_environment("postgresql://parse@localhost:5432/parse")
    with _environment(env):
        from dbt.cli.main import dbtRunner  # noqa: PLC0415

        result = dbtRunner().invoke(
            [
                "parse",
                "--quiet",
                "--no-partial-parse",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(work),
                "--log-path",
                str(work),
            ]
        )
    if not result.success:
        shutil.rmtree(work, ignore_errors=True)
        raise WarehouseError(f"dbt parse failed: {result.exception}")
    try:
        (work / "manifest.json").rename(work / "ready.json")
        out.parent.mkdir(exist_ok=True)
        (work / "ready.json").replace(out)  # a concurrent parse wrote the same content
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


@contextlib.contextmanager
def exclusive(dsn: str) -> Iterator[None]:
    """Hold the warehouse's advisory lock on this database (waits for a running build)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))


def check(dsn: str, quiet: bool = True) -> BuildReport:
    """``dbt test``: every data test and source check on what is built, nothing rebuilt."""
    report = BuildReport()
    clock = time.perf_counter()
    connection_params(dsn)
    result, started = run_dbt(["test", *(["--quiet"] if quiet else [])], dsn)
    _finish(report, result, started, clock)
    return report


def _finish(report: BuildReport, result: Any, started: float, clock: float) -> None:
    report.nodes = _nodes(result.result)
    if not result.success and result.exception is not None:
        first = str(result.exception).strip().splitlines()
        report.error = f"dbt: {first[0] if first else type(result.exception).__name__}"
    elif not result.success and not report.blocking:
        report.error = "dbt failed (see the log above)"
    span = _span(report.nodes)
    if span:
        report.seconds_startup = span[0] - started
        report.seconds_nodes = span[1] - span[0]
    report.seconds_models = sum(n.seconds for n in report.of("model"))
    report.seconds_tests = sum(n.seconds for n in report.of("test"))
    report.seconds_total = time.perf_counter() - clock


def build(
    dsn: str,
    *,
    select: list[str] | None = None,
    threads: int | None = None,
    quiet: bool = True,
) -> BuildReport:
    """Migrations, then ``dbt build`` (optionally only ``select``). Never raises for a failed
    model or check: the report says what failed; connection and migration problems raise
    :class:`WarehouseError` with one line."""
    report = BuildReport()
    clock = time.perf_counter()
    connection_params(dsn)  # refuse a bad DSN before anything runs
    try:
        applied = migrate.migrate(dsn, migrate.discover())
    except migrate.MigrationError as exc:
        raise WarehouseError(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise WarehouseError(f"cannot connect to the database: {migrate._one_line(exc)}") from exc
    report.applied_migrations = [m.file for m in applied]
    report.seconds_migrations = time.perf_counter() - clock
    args = ["build", *(["--quiet"] if quiet else [])]
    if select:
        args += ["--select", *select]
    with exclusive(dsn):
        dbt_clock = time.perf_counter()
        result, started = run_dbt(args, dsn, threads)
        report.seconds_dbt = time.perf_counter() - dbt_clock
    _finish(report, result, started, clock)
    return report
