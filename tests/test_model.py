"""FR-006: the exported forest scores like scikit-learn, without it; artifacts are verified."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.ensemble import IsolationForest

from streamflow_jobs.model.features import FEATURE_NAMES
from streamflow_jobs.model.forest import (
    DEFAULT_MODEL_PATH,
    SHIPPED_FOREST_PATH,
    ForestScorer,
    ModelArtifactError,
    payload_checksum,
)
from streamflow_jobs.model.train import train_forest
from streamflow_jobs.model.treewalk import LANES

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, len(FEATURE_NAMES)))
    x[:30] += rng.normal(6, 2, size=(30, len(FEATURE_NAMES)))  # a few anomalies
    return x


@pytest.fixture(scope="module")
def artifact(data: np.ndarray) -> dict:
    return train_forest(data, seed=11, training={"test": True})


def test_scores_match_sklearn_within_1e9(data: np.ndarray, artifact: dict) -> None:
    reference = IsolationForest(n_estimators=100, max_samples=1024, random_state=11).fit(data)
    scorer = ForestScorer.from_bytes(orjson.dumps(artifact))
    probe = np.vstack([data, np.random.default_rng(1).normal(0, 4, size=(2000, data.shape[1]))])
    expected = -reference.score_samples(probe)
    assert np.max(np.abs(scorer.raw_scores(probe) - expected)) < 1e-9  # compiled walk
    assert np.max(np.abs(scorer.raw_scores_numpy(probe) - expected)) < 1e-9
    single = np.array([scorer.raw_score_one(tuple(row)) for row in probe[:200]])
    assert np.max(np.abs(single - expected[:200])) < 1e-9


def test_compiled_walk_matches_the_reference_for_any_row_count(artifact: dict) -> None:
    """Rows walk the trees in groups of LANES; the remainder one at a time."""
    scorer = ForestScorer.from_bytes(orjson.dumps(artifact))
    rows = np.random.default_rng(2).normal(0, 3, size=(3 * LANES + 5, len(FEATURE_NAMES)))
    for n in range(1, len(rows) + 1):
        np.testing.assert_allclose(
            scorer.raw_scores(rows[:n]), scorer.raw_scores_numpy(rows[:n]), rtol=0, atol=1e-12
        )
    # A row's score does not depend on the rows beside it (lane or remainder).
    alone = np.array([scorer.raw_scores(rows[i : i + 1])[0] for i in range(len(rows))])
    assert np.array_equal(scorer.raw_scores(rows), alone)


def test_scoring_does_not_import_sklearn() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys; from streamflow_jobs.model.forest import ForestScorer; "
        "s = ForestScorer.load(); s.scores([[0.0] * len(s.features)]); "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tampered_artifact_is_refused(artifact: dict) -> None:
    doc = copy.deepcopy(artifact)
    doc["calibration"]["high"] = 0.99
    with pytest.raises(ModelArtifactError, match="checksum"):
        ForestScorer.from_bytes(orjson.dumps(doc))


def test_structurally_bad_artifact_is_refused_even_with_a_valid_checksum(artifact: dict) -> None:
    doc = copy.deepcopy(artifact)
    doc["trees"]["node_count"] += 5
    doc["checksum"] = payload_checksum(doc)
    with pytest.raises(ModelArtifactError, match=r"node_count|values"):
        ForestScorer.from_bytes(orjson.dumps(doc))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[]", b'{"format": "pickle"}'])
def test_non_artifacts_are_refused(raw: bytes) -> None:
    with pytest.raises(ModelArtifactError):
        ForestScorer.from_bytes(raw)


def test_shipped_default_model_loads_and_is_small() -> None:
    scorer = ForestScorer.load()
    assert scorer.features == FEATURE_NAMES
    assert scorer.model_version.startswith("iforest-")
    assert DEFAULT_MODEL_PATH.stat().st_size < 1024 * 1024  # fits a ConfigMap
    ml = np.array(scorer.scores(np.zeros((3, len(FEATURE_NAMES)))))
    assert np.all((ml >= 0) & (ml <= 1))


def test_batch_and_single_row_scores_are_the_same_floats_on_any_processor() -> None:
    """The batch path (replay) and the per-event path (Flink) compute every float with the same
    scalar operations. numpy's vectorised power differs from the C library's in the last bit
    for some inputs on AVX-512 processors, so it must not be used for either."""
    scorer = ForestScorer.load()
    rng = np.random.default_rng(11)
    rows = rng.normal(0, 3, size=(2000, len(FEATURE_NAMES)))
    rows[:, 2] = rng.integers(1, 12, size=2000)  # velocity counts
    batch = scorer.scores(rows)
    single = [scorer.calibrate_one(scorer.raw_score_one(tuple(r))) for r in rows.tolist()]
    assert batch == single  # bit for bit
    raw = scorer.raw_scores(rows)
    assert raw.tolist() == [scorer.raw_score_one(tuple(r)) for r in rows.tolist()]
    assert raw.tolist() == scorer.raw_scores_numpy(rows).tolist()


@pytest.mark.parametrize(
    ("options", "shipped"),
    [([], DEFAULT_MODEL_PATH), (["--unsupervised"], SHIPPED_FOREST_PATH)],
    ids=["boosted-trees", "isolation-forest"],
)
def test_train_reproduces_the_shipped_models(
    tmp_path: Path, options: list[str], shipped: Path
) -> None:
    """`streamflow train --seed 7 [--unsupervised]` gives back the committed artifacts, byte
    for byte (`make model`)."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from streamflow_jobs.cli import app  # noqa: PLC0415

    out = tmp_path / "model.json"
    result = CliRunner().invoke(app, ["train", "--seed", "7", *options, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == shipped.read_bytes()
