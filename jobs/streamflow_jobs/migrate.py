"""Apply the warehouse's SQL migrations (``sql/migrations/NNNN_name.sql``) in order, once each.

The migrations Job that the operator creates for every FraudPipeline runs::

    python -m streamflow_jobs.migrate --database-url-env DATABASE_URL --wait 600

- ``--wait`` retries the first connection while the database is starting (no ``pg_isready`` or
  shell needed in the image).

- Each migration runs in one transaction with its ledger row (``public.streamflow_migrations``):
  a failure leaves nothing half-applied, and the next run starts again from that file.
- A transaction-level advisory lock serialises concurrent runs (a retried pod, two Jobs).
- The ledger keeps each file's SHA-256. A migration that was applied and then edited is refused,
  as Flyway and Alembic do: a change to a deployed schema is a new migration.
- Errors are one line on stderr and exit code 1, never a traceback; the database URL (it holds a
  password) is never printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

# Inside a built wheel the files sit in the package (see pyproject); in a checkout, at the root.
_PACKAGED = Path(__file__).with_name("sql") / "migrations"
_CHECKOUT = Path(__file__).resolve().parents[2] / "sql" / "migrations"
DEFAULT_DIR = _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT
RETRY_SECONDS = 3.0
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every run of this tool.
_LOCK_ID = int.from_bytes(hashlib.sha256(b"streamflow.migrate").digest()[:8], "big", signed=True)
_LEDGER = """
CREATE TABLE IF NOT EXISTS public.streamflow_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration set or database state this tool must not proceed with."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def file(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def discover(directory: Path = DEFAULT_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; bad names and duplicates refused."""
    if not directory.is_dir():
        raise MigrationError(f"no migrations directory at {directory}")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: not a migration name (NNNN_lower_case.sql)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"{path.name}: version {version} also used by {found[version].file}"
            )
        found[version] = Migration(version, match.group(2), path.read_text("utf-8"))
    return [found[v] for v in sorted(found)]


def connect(conninfo: str, wait: float = 0.0) -> psycopg.Connection[TupleRow]:
    """Connect, retrying for up to ``wait`` seconds while the server cannot be reached or
    refuses (starting up, database not created yet): the Job may start before its database."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.ProgrammingError as exc:
            # libpq would quote the offending token, which may be the password: say less.
            raise MigrationError("the database URL is not a valid libpq URL or DSN") from exc
        except psycopg.OperationalError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            print(f"waiting for the database: {_one_line(exc)}", file=sys.stderr, flush=True)
            time.sleep(min(RETRY_SECONDS, left))


def _one_line(exc: BaseException) -> str:
    # libpq's messages name host, port and user, never the password.
    return " ".join(str(exc).split()) or type(exc).__name__


def migrate(conninfo: str, migrations: list[Migration], wait: float = 0.0) -> list[Migration]:
    """Apply what is not applied yet; return what was applied (empty when up to date).
    ``wait``: seconds to keep retrying the first connection (see :func:`connect`)."""
    applied: list[Migration] = []
    with connect(conninfo, wait) as conn:
        with conn.transaction():  # concurrent CREATE TABLE IF NOT EXISTS can race: lock first
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            conn.execute(_LEDGER)
            ledger = conn.execute("SELECT version FROM public.streamflow_migrations").fetchall()
        # Refuse a database that is ahead of this code (a newer image ran first), before
        # touching it.
        unknown = sorted({v for (v,) in ledger} - {m.version for m in migrations})
        if unknown:
            raise MigrationError(
                f"the database has migrations this version does not know: {unknown}"
            )
        for migration in migrations:
            with conn.transaction():
                # Held to the end of this transaction: one runner applies a file at a time.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                row = conn.execute(
                    "SELECT sha256 FROM public.streamflow_migrations WHERE version = %s",
                    (migration.version,),
                ).fetchone()
                if row is not None:
                    if row[0] != migration.sha256:
                        raise MigrationError(
                            f"{migration.file} was applied with a different content "
                            f"(sha256 {row[0][:12]}, the file now has {migration.sha256[:12]}): "
                            "a change to an applied migration must be a new migration"
                        )
                    continue
                try:
                    conn.execute(migration.sql.encode("utf-8"))
                except psycopg.Error as exc:
                    first_line = (str(exc).strip().splitlines() or [""])[0]
                    raise MigrationError(
                        f"{migration.file} failed and was rolled back: "
                        f"{type(exc).__name__}: {first_line}"
                    ) from exc
                conn.execute(
                    "INSERT INTO public.streamflow_migrations (version, name, sha256) "
                    "VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.sha256),
                )
                applied.append(migration)
    return applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamflow_jobs.migrate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--database-url-env",
        default="DATABASE_URL",
        help="name of the environment variable holding the libpq URL (default DATABASE_URL)",
    )
    parser.add_argument("--migrations", type=Path, default=DEFAULT_DIR, help="migrations dir")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying the connection this long while the database is not up (default 0)",
    )
    args = parser.parse_args(argv)
    conninfo = os.environ.get(args.database_url_env)
    if not conninfo:
        print(f"error: environment variable {args.database_url_env} is not set", file=sys.stderr)
        return 1
    try:
        migrations = discover(args.migrations)
        applied = migrate(conninfo, migrations, wait=args.wait)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"error: cannot connect to the database: {_one_line(exc)}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(m.file for m in applied)}")
    else:
        print(f"up to date ({len(migrations)} migration(s) already applied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
