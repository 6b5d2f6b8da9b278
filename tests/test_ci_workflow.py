"""The contributors' CI workflow: actionlint (built from its Go module) finds nothing, and the
test job runs exactly what .ci/run runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import VERSIONS

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint() -> str:
    subprocess.run(
        [str(ROOT / "e2e/cluster/build.sh"), "actionlint"], check=True, capture_output=True
    )
    cache = Path(os.environ.get("STREAMFLOW_CACHE", Path.home() / ".cache/streamflow"))
    return str(cache / "bin" / f"actionlint-{VERSIONS['ACTIONLINT_VERSION']}")


def test_actionlint_finds_nothing() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert files
    done = subprocess.run(
        [actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_test_job_runs_what_ci_runs() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    runs = [step["run"] for step in workflow["jobs"]["test"]["steps"] if "run" in step]
    assert runs == [".ci/run"]
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")
    assert workflow["jobs"]["test"]["timeout-minutes"] <= 90
