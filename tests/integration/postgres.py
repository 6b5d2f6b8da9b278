"""A throwaway PostgreSQL (Debian's) for the warehouse benchmark when no database is given:
initdb into a temporary directory, start on a free port with password authentication, remove on
exit (the same recipe as the integration tests' session server in conftest.py). As root,
PostgreSQL refuses to run: it runs as ``postgres``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class PostgresMissingError(RuntimeError):
    pass


def installed() -> Path:
    """The directory of the newest installed PostgreSQL's programs."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise PostgresMissingError(
            "PostgreSQL is not installed: `make test` installs it (apt-get postgresql)"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def temporary_server(fsync: bool = False, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A libpq URL of a superuser on a running server (database ``postgres``). Tests run
    without fsync (nothing to keep); the benchmark keeps it, as a real server does. The server's
    log is ``<data_directory>/../log``."""
    bin_dir = installed()
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="streamflow-pg-"))
    data, sockets, pwfile = base / "data", base / "sock", base / "pw"
    sockets.mkdir()
    password = secrets.token_urlsafe(16)
    pwfile.write_text(password)
    if as_root:
        shutil.chown(base, "postgres")
        for path in (sockets, pwfile):
            shutil.chown(path, "postgres")
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, cwd=base)

    run(
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        "streamflow",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--no-sync",
    )
    options = " ".join(
        [
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1",
            f"-c fsync={'on' if fsync else 'off'}",
            *(f"-c {k}={v}" for k, v in (settings or {}).items()),
        ]
    )
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        yield f"postgresql://streamflow:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
