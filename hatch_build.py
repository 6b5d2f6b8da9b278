"""The wheel carries the compiled hot path: a platform wheel, never a silent pure-Python one.

`make compile` builds the mypyc modules (rules evaluator, state, and mypyc's shared group
library, which sits at the top of ``jobs/``) and the C extension ``_jsonkeys``, and records
their sources' hashes in ``streamflow_jobs/_compiled.json``. This hook (hatchling's custom build
hook, run by ``uv build --wheel``) puts all of them into the wheel and tags it for this
interpreter and platform (e.g. ``cp311-cp311-linux_x86_64``). It refuses to build when the
compiled modules are missing or were built from other sources, so an image can only ever
install machine code made from the very sources it carries. Editable installs (``uv sync``)
are left alone: there the modules sit next to the sources already.
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

JOBS = Path(__file__).resolve().parent / "jobs"
PACKAGE = JOBS / "streamflow_jobs"
MANIFEST = PACKAGE / "_compiled.json"


def _extension(stem: Path) -> Path | None:
    for suffix in EXTENSION_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.exists():
            return candidate
    return None


def compiled_files(jobs: Path = JOBS) -> dict[str, str]:
    """Absolute path -> path inside the wheel, of every compiled file; raises when the build is
    missing or stale."""
    manifest = jobs / MANIFEST.relative_to(JOBS)
    if not manifest.exists():
        raise RuntimeError("no compiled hot path: run `make compile` before building the wheel")
    recorded: dict[str, str] = json.loads(manifest.read_text())
    if not recorded:
        raise RuntimeError(f"{manifest.name} records no compiled module: run `make compile`")
    files = {str(manifest): "streamflow_jobs/_compiled.json"}
    for relative, digest in sorted(recorded.items()):
        source = jobs / relative
        if not source.exists():
            raise RuntimeError(f"{relative} is recorded but missing: run `make compile`")
        if hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            raise RuntimeError(f"{relative} changed since `make compile`: run it again")
        built = _extension(source.with_suffix(""))
        if built is None:
            raise RuntimeError(f"{relative} has no compiled module: run `make compile`")
        files[str(built)] = built.relative_to(jobs).as_posix()
    # mypyc's shared library of the group (named by a hash of its modules), imported by the
    # per-module shims above: top-level in site-packages, as in the source tree.
    groups = sorted(jobs.glob("*__mypyc.cpython-*.so"))
    if len(groups) != 1:
        raise RuntimeError(f"expected one mypyc group library in jobs/, found {len(groups)}")
    files[str(groups[0])] = groups[0].name
    return files


class CompiledHotPath(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        build_data["force_include"].update(compiled_files())
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
