"""The guard that refuses compiled modules built from another source."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from streamflow_jobs import _compiled

pytestmark = pytest.mark.unit


def test_stale_or_unrecorded_builds_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "streamflow_jobs"
    package.mkdir()
    (package / "state.py").write_text("x = 1\n")
    (package / "state.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0")
    monkeypatch.setattr(_compiled, "PACKAGE", package)
    monkeypatch.setattr(_compiled, "MANIFEST", package / "_compiled.json")
    with pytest.raises(ImportError, match="make compile"):
        _compiled.check()  # compiled, never recorded
    _compiled.record(["streamflow_jobs/state.py"])
    _compiled.check()  # recorded and current
    (package / "state.py").write_text("x = 2\n")
    with pytest.raises(ImportError, match=r"state\.py"):
        _compiled.check()  # the source changed since


def test_a_required_compiled_path_refuses_a_missing_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STREAMFLOW_REQUIRE_COMPILED=1 (set by the images): no silent interpreted fallback."""
    package = tmp_path / "streamflow_jobs"
    (package / "rules").mkdir(parents=True)
    (package / "state.py").write_text("x = 1\n")
    (package / "rules" / "evaluator.py").write_text("y = 1\n")
    monkeypatch.setattr(_compiled, "PACKAGE", package)
    monkeypatch.setattr(_compiled, "MANIFEST", package / "_compiled.json")
    _compiled.check()  # not required: the interpreted path is allowed (a checkout, no compile)
    monkeypatch.setenv(_compiled.REQUIRE_ENV, "1")
    with pytest.raises(ImportError, match=r"_compiled\.json is missing"):
        _compiled.check()  # nothing was ever compiled
    _compiled.record(["streamflow_jobs/state.py", "streamflow_jobs/rules/evaluator.py"])
    suffix = sysconfig.get_config_var("EXT_SUFFIX")  # this interpreter's, e.g. .cpython-311-...
    (package / f"state{suffix}").write_bytes(b"\0")
    with pytest.raises(ImportError, match=r"rules/evaluator\.py has no compiled module"):
        _compiled.check()  # one module was left out
    (package / "rules" / f"evaluator{suffix}").write_bytes(b"\0")
    _compiled.check()  # all there and current
