"""The guard that refuses compiled modules built from another source."""

from __future__ import annotations

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
