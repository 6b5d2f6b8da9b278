"""Guard for the mypyc-compiled hot path: never run machine code built from an older source.

`make compile` builds extension modules for the files in COMPILED and C_EXTENSIONS and records
the SHA-256 of each source here (``_compiled.json``). At import, :func:`check` compares the
recorded hashes with the sources: if a source changed since, its stale extension module is
refused with a clear message (run ``make compile``) instead of silently running old logic.

Where the compiled path is required (the container images set ``STREAMFLOW_REQUIRE_COMPILED=1``),
a missing build is refused too: every recorded source must have its extension module, so an
image can never fall back to the ~2.7x slower interpreted path without anyone noticing.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"
REQUIRE_ENV = "STREAMFLOW_REQUIRE_COMPILED"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check() -> None:
    """Refuse any compiled module of this package that does not match its source."""
    recorded: dict[str, str] = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    for built in PACKAGE.rglob("*.cpython-*.so"):
        stem = built.name.split(".", 1)[0]
        source = built.with_name(stem + ".py")
        if not source.exists():  # a C extension (e.g. _jsonkeys.c)
            source = built.with_name(stem + ".c")
        relative = source.relative_to(PACKAGE.parent).as_posix()
        if relative not in recorded or not source.exists() or _digest(source) != recorded[relative]:
            raise ImportError(
                f"{built.name} was not compiled from the current {relative}: "
                "run `make compile` (or `make clean` to use the interpreted code)"
            )
    if os.environ.get(REQUIRE_ENV) == "1":
        _require(recorded)


def _require(recorded: dict[str, str]) -> None:
    """Every recorded source has its compiled module (and something was recorded at all)."""
    if not recorded:
        raise ImportError(
            f"{REQUIRE_ENV}=1 but {MANIFEST.name} is missing: this install carries no compiled "
            "hot path (build the wheel after `make compile`: `make wheel`)"
        )
    for relative in sorted(recorded):
        source = PACKAGE.parent / relative
        stem = source.with_suffix("")
        if not any(stem.with_name(stem.name + s).exists() for s in EXTENSION_SUFFIXES):
            raise ImportError(
                f"{REQUIRE_ENV}=1 but {relative} has no compiled module: this install would run "
                "the interpreted path (build the wheel after `make compile`: `make wheel`)"
            )


def record(sources: list[str]) -> None:
    MANIFEST.write_text(
        json.dumps({s: _digest(PACKAGE.parent / s) for s in sources}, indent=2) + "\n"
    )


if __name__ == "__main__":
    # Run as a script (not `-m`): importing the package would run check() on the old manifest.
    import sys

    if sys.argv[1:2] == ["--record"]:
        record(sys.argv[2:])
