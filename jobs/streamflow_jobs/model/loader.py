"""Load any StreamFlow model artifact: the kind it declares picks the scorer.

Both scorers have the interface the detector uses: ``inputs`` (alias ``features``, the ordered
input names of a row), ``model_version``, ``raw_score_one``, ``calibrate_one``, ``scores`` and
``kind``. An artifact without a ``kind`` is an IsolationForest: the forest's format predates the
field, and adding it would change the shipped model's bytes (``streamflow train --seed 7``
reproduces them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamflow_jobs.model import boosting, forest
from streamflow_jobs.model.artifact import ModelArtifactError, parse_document, read_bytes
from streamflow_jobs.model.boosting import BoostingScorer
from streamflow_jobs.model.forest import DEFAULT_MODEL_PATH, ForestScorer

Scorer = ForestScorer | BoostingScorer
KINDS = ("isolation_forest", "gradient_boosting")


def model_kind(doc: dict[str, Any], source: str = "model") -> str:
    kind = doc.get("kind")
    if kind is None and doc.get("format") == forest.FORMAT:
        return "isolation_forest"
    if kind not in KINDS:
        raise ModelArtifactError(
            f"{source}: model kind {kind!r} is not one of {', '.join(KINDS)}"
            if kind is not None
            else f"{source}: not a StreamFlow model artifact (no kind, format "
            f"{str(doc.get('format'))[:64]!r})"
        )
    return str(kind)


def _source(model: str | Path | bytes | None) -> tuple[bytes, str]:
    if isinstance(model, bytes):
        return model, "model"
    path = Path(model) if model is not None else DEFAULT_MODEL_PATH
    return read_bytes(path), str(path)


def load_model(model: str | Path | bytes | None = None, source: str | None = None) -> Scorer:
    """The scorer of an artifact (a path, its bytes, or the shipped default model when None),
    verified; a :class:`ModelArtifactError` of one line otherwise."""
    raw, where = _source(model)
    where = source or where
    doc = parse_document(raw, where)
    if model_kind(doc, where) == "gradient_boosting":
        return BoostingScorer.from_document(doc, where)
    return ForestScorer.from_bytes(raw, where)


def verify_model(
    raw: bytes, source: str = "model"
) -> forest.ForestArtifact | boosting.BoostedArtifact:
    """Check an artifact of either kind without building a scorer (no numba): for the
    operator, which accepts models before any job loads them."""
    doc = parse_document(raw, source)
    if model_kind(doc, source) == "gradient_boosting":
        return boosting.verify_artifact(raw, source)
    return forest.verify_artifact(raw, source)
