"""The wheel the images install: a cp311 platform wheel carrying the compiled hot path.

Built here with ``uv build --wheel`` (what ``make wheel`` runs) from the compiled tree that
``make test`` prepares (``make compile``), then unpacked and imported with the compiled path
required, as the images do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPILED = (
    "streamflow_jobs/state",
    "streamflow_jobs/rules/evaluator",
    "streamflow_jobs/_jsonkeys",
)
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def _hook_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """hatch_build.py, loaded outside a build environment (hatchling's base class stubbed)."""
    interface = types.ModuleType("hatchling.builders.hooks.plugin.interface")
    interface.BuildHookInterface = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hatchling.builders.hooks.plugin.interface", interface)
    spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (make setup installs it)"
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([uv, "build", "--wheel", "--quiet", "--out-dir", str(out)], cwd=ROOT, check=True)
    (built,) = out.glob("*.whl")
    return built


@pytest.mark.integration
def test_the_wheel_is_a_cp311_platform_wheel_with_the_compiled_modules(wheel: Path) -> None:
    assert wheel.name.startswith("streamflow-") and "-cp311-cp311-linux_" in wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = z.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Root-Is-Purelib: false" in info
    assert "Tag: cp311-cp311-linux_" in info
    for stem in COMPILED:
        assert f"{stem}{SUFFIX}" in names, stem
    assert "streamflow_jobs/_compiled.json" in names
    assert [n for n in names if n.endswith(f"__mypyc{SUFFIX}") and "/" not in n], "group library"
    # The migrations and the dbt project travel in the package (the jobs and Airflow images).
    assert "streamflow_jobs/sql/dbt/dbt_project.yml" in names
    assert any(n.startswith("streamflow_jobs/sql/migrations/") for n in names)


@pytest.mark.integration
def test_the_unpacked_wheel_runs_compiled_and_refuses_a_missing_module(
    wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "STREAMFLOW_REQUIRE_COMPILED": "1"}
    probe = (
        "import streamflow_jobs.state as s, streamflow_jobs.rules.evaluator as e; "
        "print(s.__file__); print(e.__file__)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    files = ran.stdout.split()
    assert files == [
        str(tmp_path / "streamflow_jobs" / f"state{SUFFIX}"),
        str(tmp_path / "streamflow_jobs" / "rules" / f"evaluator{SUFFIX}"),
    ]
    (tmp_path / "streamflow_jobs" / "rules" / f"evaluator{SUFFIX}").unlink()
    refused = subprocess.run(
        [sys.executable, "-c", "import streamflow_jobs"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "rules/evaluator.py has no compiled module" in refused.stderr


@pytest.mark.unit
def test_the_build_hook_refuses_a_missing_or_stale_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _hook_module(monkeypatch)
    package = tmp_path / "streamflow_jobs"
    package.mkdir()
    with pytest.raises(RuntimeError, match="make compile"):
        hook.compiled_files(tmp_path)  # never compiled
    (package / "state.py").write_text("x = 1\n")
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    (package / "_compiled.json").write_text(json.dumps({"streamflow_jobs/state.py": digest}))
    with pytest.raises(RuntimeError, match="no compiled module"):
        hook.compiled_files(tmp_path)  # recorded, but the module is gone
    (package / f"state{SUFFIX}").write_bytes(b"\0")
    with pytest.raises(RuntimeError, match="group library"):
        hook.compiled_files(tmp_path)  # mypyc's shared library is missing
    (tmp_path / f"0123__mypyc{SUFFIX}").write_bytes(b"\0")
    assert hook.compiled_files(tmp_path) == {
        str(package / "_compiled.json"): "streamflow_jobs/_compiled.json",
        str(package / f"state{SUFFIX}"): f"streamflow_jobs/state{SUFFIX}",
        str(tmp_path / f"0123__mypyc{SUFFIX}"): f"0123__mypyc{SUFFIX}",
    }
    (package / "state.py").write_text("x = 2\n")
    with pytest.raises(RuntimeError, match=r"state\.py changed since `make compile`"):
        hook.compiled_files(tmp_path)
