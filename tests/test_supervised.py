"""Issue 14, "a model that learns from labels": gradient-boosted trees trained on one labelled
world, scored without scikit-learn on another, as scikit-learn predicts them, explained."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamflow_jobs.generator import Generator, GeneratorConfig
from streamflow_jobs.labels import Labels, load_labels
from streamflow_jobs.model.artifact import ModelArtifactError, payload_checksum, write_artifact
from streamflow_jobs.model.boosting import BoostingScorer
from streamflow_jobs.model.evaluate import evaluate, stream_inputs
from streamflow_jobs.model.features import FEATURE_NAMES, MODEL_INPUTS, SEVERITY_NAMES
from streamflow_jobs.model.forest import SHIPPED_FOREST_PATH, ForestScorer
from streamflow_jobs.model.loader import load_model, verify_model
from streamflow_jobs.model.train import export_boosting, fit_boosting, train_boosting
from streamflow_jobs.model.treewalk import LANES
from streamflow_jobs.rules.config import BlacklistRule, RulesConfig

pytestmark = pytest.mark.unit


class World:
    """A labelled world of the generator, with its inputs built in stream order."""

    def __init__(self, root: Path, seed: int, fraud_rate: float, events: int) -> None:
        gen = Generator(GeneratorConfig(events=events, fraud_rate=fraud_rate, seed=seed))
        pairs = list(gen.generate())
        self.events = root / f"tx{seed}.jsonl"
        self.labels_path = root / f"labels{seed}.jsonl"
        self.events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e, _ in pairs))
        self.labels_path.write_bytes(b"".join(orjson.dumps(lab) + b"\n" for _, lab in pairs))
        self.rules = RulesConfig(blacklist=BlacklistRule(customers=gen.blacklist))
        self.rules_path = root / f"rules{seed}.yaml"
        self.rules_path.write_text(self.rules.to_yaml())
        self.truth: Labels = load_labels(self.labels_path)
        self.ids, self.x = stream_inputs(self.events.read_bytes().splitlines(), self.rules)
        self.y = np.array([self.truth.is_fraud(self.truth.by_id[t]) for t in self.ids])


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, World]:
    root = tmp_path_factory.mktemp("worlds")
    return {
        "train": World(root, seed=101, fraud_rate=0.03, events=20_000),
        "rare": World(root, seed=202, fraud_rate=0.01, events=20_000),
    }


@pytest.fixture(scope="module")
def fitted(worlds: dict[str, World]) -> object:
    w = worlds["train"]
    return fit_boosting(w.x, w.y, seed=3)


@pytest.fixture(scope="module")
def artifact(fitted: object) -> dict:
    return export_boosting(fitted, inputs=list(MODEL_INPUTS), training={"test": True})


@pytest.fixture(scope="module")
def scorer(artifact: dict) -> BoostingScorer:
    model = load_model(orjson.dumps(artifact))
    assert isinstance(model, BoostingScorer)
    return model


def probe_rows(worlds: dict[str, World], scorer: BoostingScorer) -> np.ndarray:
    """Rows of another world, plus rows sitting exactly on split thresholds (either side)."""
    rows = [worlds["rare"].x]
    p = scorer._paths
    internal = [n for n in range(len(p.left)) if p.left[n] != -1][:300]
    base = np.repeat(worlds["rare"].x[:1], len(internal), axis=0)
    for k, n in enumerate(internal):
        base[k, p.feature[n]] = np.float32(p.threshold[n])
    rows.append(base)
    above = base.copy()
    for k, n in enumerate(internal):
        above[k, p.feature[n]] = np.nextafter(np.float32(p.threshold[n]), np.float32(np.inf))
    rows.append(above)
    return np.vstack(rows)


def test_severity_inputs_are_the_rules_severities(worlds: dict[str, World]) -> None:
    """RuleOutcome.severities: 0 for a rule that did not fire, its reason's severity else."""
    from streamflow_jobs.events import ParsedTransaction, parse_transaction  # noqa: PLC0415
    from streamflow_jobs.rules.evaluator import RulesEvaluator  # noqa: PLC0415
    from streamflow_jobs.state import CustomerState  # noqa: PLC0415

    w = worlds["train"]
    evaluator = RulesEvaluator(w.rules)
    states: dict[str, CustomerState] = {}
    codes = ("FR-001", "FR-002", "FR-003", "FR-004", "FR-005")
    fired = [0] * len(codes)
    for raw in w.events.read_bytes().splitlines()[:20_000]:
        parsed = parse_transaction(raw)
        assert isinstance(parsed, ParsedTransaction)
        txn = parsed.transaction
        outcome = evaluator.evaluate(states.setdefault(txn.customer_id, CustomerState()), txn)
        if outcome.repeat_of is not None:
            continue
        by_code = {r.code: r.severity for r in outcome.reasons}
        expected = tuple(by_code.get(code, 0.0) for code in codes)
        assert outcome.severities == expected
        fired = [f + (s > 0) for f, s in zip(fired, outcome.severities, strict=True)]
    assert all(fired), fired  # every rule fired somewhere in this world
    assert MODEL_INPUTS == FEATURE_NAMES + SEVERITY_NAMES and len(SEVERITY_NAMES) == len(codes)


def test_trained_on_one_world_it_finds_the_fraud_of_another(
    worlds: dict[str, World], scorer: BoostingScorer
) -> None:
    """Trained at 3 % fraud, scored at 1 % (another seed): it ranks and separates."""
    report = evaluate(scorer, worlds["rare"].ids, worlds["rare"].x, worlds["rare"].truth)
    print(report)
    assert report["fraud"] > 100
    assert report["average_precision"] >= 0.9
    assert report["at_0.5"]["precision"] >= 0.8 and report["at_0.5"]["recall"] >= 0.8
    # A stricter threshold trades recall for precision, as a probability should.
    assert report["at_0.8"]["precision"] >= report["at_0.5"]["precision"]
    assert report["at_0.8"]["recall"] <= report["at_0.5"]["recall"]


def test_predictions_match_sklearn_within_1e9(
    worlds: dict[str, World], fitted: object, scorer: BoostingScorer
) -> None:
    probe = probe_rows(worlds, scorer)
    expected = fitted.predict_proba(probe)[:, 1]  # type: ignore[attr-defined]
    margins = fitted.decision_function(probe)  # type: ignore[attr-defined]
    assert np.max(np.abs(np.array(scorer.scores(probe)) - expected)) <= 1e-9
    assert np.max(np.abs(scorer.raw_scores(probe) - margins)) <= 1e-9
    python = np.array([scorer.raw_score_python(r) for r in probe[-700:]])
    assert np.max(np.abs(python - margins[-700:])) <= 1e-9


def test_batch_and_per_event_scores_are_the_same_floats(
    worlds: dict[str, World], scorer: BoostingScorer
) -> None:
    probe = probe_rows(worlds, scorer)[-3 * LANES - 700 :]
    batch = scorer.scores(probe)
    one = [scorer.calibrate_one(scorer.raw_score_one(tuple(r))) for r in probe.tolist()]
    assert batch == one  # bit for bit, not approximately
    assert [scorer.raw_score_python(r) for r in probe.tolist()] == scorer.raw_scores(probe).tolist()
    # A row's score does not depend on the rows beside it (lane or remainder).
    for n in range(1, 3 * LANES + 2):
        assert scorer.scores(probe[:n]) == batch[:n]


def test_explanations_add_up_to_the_log_odds(
    worlds: dict[str, World], scorer: BoostingScorer
) -> None:
    w = worlds["rare"]
    fraud_rows = w.x[w.y][:50]
    for row in [*fraud_rows.tolist(), *w.x[:200].tolist()]:
        explained = scorer.explain_one(row)
        assert [name for name, _ in explained] == sorted(
            scorer.inputs, key=lambda n: (-abs(dict(explained)[n]), n)
        )
        total = sum(c for _, c in explained)
        assert abs(total - (scorer.raw_score_one(row) - scorer.base_value)) <= 1e-9
    # Where the model is sure of fraud, what pushed the score up is named first.
    sure = [r for r in fraud_rows.tolist() if scorer.score_one(r) >= 0.9]
    assert len(sure) >= 25
    assert all(scorer.explain_one(r)[0][1] > 0 for r in sure)


def test_artifact_round_trip_and_kind_dispatch(tmp_path: Path, artifact: dict) -> None:
    path = tmp_path / "gbt.json"
    write_artifact(artifact, path)
    from_file = load_model(path)
    from_bytes = load_model(path.read_bytes())
    assert isinstance(from_file, BoostingScorer)
    assert from_file.kind == "gradient_boosting" == artifact["kind"]
    assert from_file.model_version == from_bytes.model_version == artifact["model_version"]
    assert artifact["model_version"].startswith("gbt-") and len(artifact["model_version"]) == 16
    assert from_file.inputs == MODEL_INPUTS
    rows = np.random.default_rng(4).normal(0, 2, size=(50, len(MODEL_INPUTS)))
    assert from_file.scores(rows) == from_bytes.scores(rows)
    assert verify_model(path.read_bytes()).model_version == artifact["model_version"]
    # The shipped forest (no kind field) loads through the same loader.
    forest = load_model(SHIPPED_FOREST_PATH)
    assert isinstance(forest, ForestScorer)
    assert forest.kind == "isolation_forest" and forest.inputs == FEATURE_NAMES


def reseal(doc: dict) -> bytes:
    doc["checksum"] = payload_checksum(doc)
    return orjson.dumps(doc)


def test_tampered_or_malformed_artifacts_are_refused(artifact: dict) -> None:
    tampered = copy.deepcopy(artifact)
    tampered["init"] += 1.0
    with pytest.raises(ModelArtifactError, match="checksum mismatch"):
        load_model(orjson.dumps(tampered))
    unknown_input = copy.deepcopy(artifact)
    unknown_input["inputs"][0] = "os.system"
    with pytest.raises(ModelArtifactError, match="inputs must be distinct names"):
        load_model(reseal(unknown_input))
    cyclic = copy.deepcopy(artifact)
    arrays = cyclic["trees"]
    from streamflow_jobs.model.artifact import pack, unpack  # noqa: PLC0415

    left = unpack(arrays["children_left"], "<i2", arrays["node_count"], "children_left").copy()
    left[1] = 0  # a child pointing back at the root
    arrays["children_left"] = pack(left)
    with pytest.raises(ModelArtifactError, match="malformed node arrays"):
        load_model(reseal(cyclic))
    other_kind = copy.deepcopy(artifact)
    other_kind["kind"] = "neural_net"
    with pytest.raises(ModelArtifactError, match="kind 'neural_net' is not one of"):
        load_model(reseal(other_kind))
    for raw in (b"", b"[]", b'{"format": "x"}', orjson.dumps(artifact)[:-40]):
        with pytest.raises(ModelArtifactError) as info:
            load_model(raw)
        assert "\n" not in str(info.value)


def test_training_is_deterministic(worlds: dict[str, World]) -> None:
    w = worlds["train"]
    first = train_boosting(w.x[:4000], w.y[:4000], seed=9, training={})
    again = train_boosting(w.x[:4000], w.y[:4000], seed=9, training={})
    assert orjson.dumps(first) == orjson.dumps(again)


def test_scoring_does_not_import_sklearn(tmp_path: Path, artifact: dict) -> None:
    path = tmp_path / "gbt.json"
    write_artifact(artifact, path)
    code = (
        "import sys; from streamflow_jobs.model.loader import load_model; "
        f"m = load_model({str(path)!r}); m.scores([[0.0] * len(m.inputs)]); "
        "m.explain_one([0.0] * len(m.inputs)); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def cli(*args: str | Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "streamflow_jobs.cli", *map(str, args)],
        capture_output=True,
        check=False,
    )
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert "Traceback" not in said, said
    return done.returncode, said


def test_train_with_labels_writes_a_gradient_boosting_model(
    tmp_path: Path, worlds: dict[str, World]
) -> None:
    w = worlds["rare"]
    out = tmp_path / "m.json"
    code, said = cli(
        "train", "--input", w.events, "--labels", w.labels_path, "--rules", w.rules_path,
        "--output", out,
    )  # fmt: skip
    assert code == 0, said
    model = load_model(out)
    assert isinstance(model, BoostingScorer) and model.inputs == MODEL_INPUTS
    assert model.artifact.training["fraud_rows"] == int(w.y.sum())
    assert model.artifact.training["input"] == w.events.name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"transaction_id": "a", "is_fraud": "yes"}\n', "is_fraud must be true/false or 1/0"),
        (b"not json\n", "not JSON"),
        (b'{"transaction_id": "nobody-here", "is_fraud": true}\n', "0 labelled transactions"),
    ],
)
def test_bad_labels_are_a_one_line_error(
    tmp_path: Path, worlds: dict[str, World], content: bytes, message: str
) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(content)
    out = tmp_path / "m.json"
    code, said = cli("train", "--input", worlds["rare"].events, "--labels", labels, "-o", out)
    assert code != 0
    assert message in said and len(said.strip().splitlines()) <= 2, said
    assert not out.exists()


def test_forest_explanations_add_up_to_its_log2_score(worlds: dict[str, World]) -> None:
    """The shipped IsolationForest explains itself the same way, in log2 of its raw score."""
    import math  # noqa: PLC0415

    forest = load_model(SHIPPED_FOREST_PATH)
    assert isinstance(forest, ForestScorer)
    for row in worlds["rare"].x[:300, : len(FEATURE_NAMES)].tolist():
        explained = forest.explain_one(row)
        assert sorted(name for name, _ in explained) == sorted(FEATURE_NAMES)
        total = sum(c for _, c in explained)
        assert abs(total - (math.log2(forest.raw_score_one(row)) - forest.base_value)) <= 1e-9


def test_input_row_picks_the_declared_inputs(worlds: dict[str, World]) -> None:
    """A model may declare any ordered subset of MODEL_INPUTS; input_row builds its row."""
    from sklearn.ensemble import GradientBoostingClassifier  # noqa: PLC0415

    w = worlds["train"]
    names = ["severity_velocity", "amount_z", "velocity_count"]
    cols = [MODEL_INPUTS.index(n) for n in names]
    fitted = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
    fitted.fit(w.x[:5000][:, cols], w.y[:5000])
    subset = load_model(orjson.dumps(export_boosting(fitted, inputs=names, training={})))
    assert isinstance(subset, BoostingScorer) and subset.inputs == tuple(names)
    row = w.x[7]
    features, severities = tuple(row[:8].tolist()), tuple(row[8:].tolist())
    assert subset.input_row(features, severities) == tuple(row[cols].tolist())
    expected = fitted.predict_proba(w.x[:500][:, cols])[:, 1]
    assert np.max(np.abs(np.array(subset.scores(w.x[:500][:, cols])) - expected)) <= 1e-9
    forest = load_model(SHIPPED_FOREST_PATH)
    assert forest.input_row(features, severities) == features


def test_the_operator_accepts_a_gradient_boosting_model(artifact: dict) -> None:
    from streamflow_operator.reconcile import verify_model as operator_verify  # noqa: PLC0415

    raw = orjson.dumps(artifact)
    verified = operator_verify(raw, "ConfigMap ns/m", artifact["model_version"])
    assert verified.version == artifact["model_version"]
    assert verified.checksum == artifact["checksum"]
    tampered = copy.deepcopy(artifact)
    tampered["learning_rate"] = 0.5
    with pytest.raises(ValueError, match="checksum mismatch"):
        operator_verify(orjson.dumps(tampered), "ConfigMap ns/m", None)
