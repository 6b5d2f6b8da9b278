"""Guard for the mypyc-compiled hot path: never run machine code built from an older source.

`make compile` builds extension modules for the files in COMPILED and C_EXTENSIONS and records
the SHA-256 of each source here (``_compiled.json``). At import, :func:`check` compares the
recorded hashes with the sources: if a source changed since, its stale extension module is
refused with a clear message (run ``make compile``) instead of silently running old logic.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"


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


def record(sources: list[str]) -> None:
    MANIFEST.write_text(
        json.dumps({s: _digest(PACKAGE.parent / s) for s in sources}, indent=2) + "\n"
    )


if __name__ == "__main__":
    # Run as a script (not `-m`): importing the package would run check() on the old manifest.
    import sys

    if sys.argv[1:2] == ["--record"]:
        record(sys.argv[2:])
