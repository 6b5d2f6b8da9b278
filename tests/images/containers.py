"""The images under test: built once per session by `config/images/build.sh` (what `make images`
runs: warm, only changed layers are redone) and run with podman (config/images/podman.sh, which
installs podman on first use and applies this machine kind's settings).

The tests that run an image sit beside the session's components they use (tests/e2e: the control
plane; tests/integration: PostgreSQL, Kafka): one of each per session, shared.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ROOT / "config" / "images" / "podman.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
REGISTRY = "ghcr.io/streamflow"  # config/images/build.sh tags ghcr.io/streamflow/<name>:<version>
# The images' users (config/images/*.Containerfile).
UIDS = {"operator": 10001, "jobs": 9999, "airflow": 50000}


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """podman's stdout; a failure names the command and podman's last words."""
    try:
        done = subprocess.run(
            [str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:  # never a skip: the tests need podman
        pytest.fail(f"podman is not available ({exc}): config/images/podman.sh installs it")
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


@functools.cache
def image(name: str) -> str:
    """The image `make images` tags, built (or found up to date) once per session."""
    for command in (["make", "-s", "wheel"], [str(ROOT / "config/images/build.sh"), name]):
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False
        )
        if done.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr).strip()[-3000:]}"
            )
    return f"{REGISTRY}/{name}:{VERSION}"


@contextlib.contextmanager
def running(ref: str, command: Sequence[str] = (), options: Sequence[str] = ()) -> Iterator[str]:
    """A detached container of ``ref`` on the host's network, with a read-only root filesystem
    and a fresh /tmp (the images' only writable place); removed afterwards."""
    name = f"streamflow-test-{uuid.uuid4().hex[:8]}"
    podman(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--tmpfs", "/tmp:rw,exec,mode=1777", *options, ref, *command,
    )  # fmt: skip
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def logs(name: str) -> str:
    """What the container wrote, stdout and stderr interleaved."""
    done = subprocess.run(
        [str(PODMAN), "logs", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout


def readable_by(path: Path, image_name: str) -> Path:
    """``path`` made readable (only) by the image's user, for a read-only bind mount."""
    os.chown(path, UIDS[image_name], UIDS[image_name])
    path.chmod(0o600)
    return path


def failure(name: str) -> str:
    """Why a container stopped: its errors and causes (first 20 such lines), then its tail."""
    text = logs(name)
    causes = [
        line
        for line in text.splitlines()
        if line.startswith("Caused by") or " ERROR " in line or "Error:" in line
    ]
    return "\n".join(causes[:20]) + "\n...\n" + text[-1500:]
