"""The fraud detector: rules (FR-001..FR-005) blended with the ML score (FR-006).

One :class:`Detector` serves the Flink fraud-detector and ``streamflow replay``. Evaluation is two
steps so that batch callers can score the model once per batch:

1. :meth:`Detector.evaluate` runs the rules for one transaction and updates the customer's state
   (sequential by nature: each transaction sees the history before it);
2. :meth:`Detector.decide_batch` scores the features of many outcomes with the forest at once and
   blends. The state never depends on the ML score, so batching cannot change any decision;
   :meth:`Detector.decide` is the same for a single outcome.

``score = ml_alpha * ml + (1 - ml_alpha) * rules``. The default alpha (0.7) leans on the model,
which ranks best (docs/benchmarks.md); the rules add their reasons and lift what they confirm. A
block rule (FR-005, the blacklist) is the exception: like a block list in Stripe Radar, it
overrides the blend and raises the score to the alert threshold, so a listed customer or store
always alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np

from streamflow_jobs.events import FraudDecision, Transaction
from streamflow_jobs.model.features import FEATURE_NAMES
from streamflow_jobs.model.forest import ForestScorer, ModelArtifactError
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.rules.evaluator import RuleOutcome, RulesEvaluator
from streamflow_jobs.state import CustomerState


class Detector:
    def __init__(self, rules: RulesConfig, model: ForestScorer | None) -> None:
        if model is not None and model.features != FEATURE_NAMES:
            raise ModelArtifactError(
                f"model {model.model_version} expects features {list(model.features)}, "
                f"this detector builds {list(FEATURE_NAMES)}"
            )
        self.rules = rules
        self.model = model
        self.evaluator = RulesEvaluator(rules)
        # Without a model the blend is the rules score alone.
        self.alpha = rules.ml_alpha if model is not None else 0.0
        self.model_version = model.model_version if model is not None else None
        self.threshold = rules.alert_threshold

    def evaluate(self, state: CustomerState, txn: Transaction) -> RuleOutcome:
        return self.evaluator.evaluate(state, txn)

    def evaluate_batch(
        self, states: dict[str, CustomerState], txns: list[Transaction]
    ) -> list[RuleOutcome]:
        return self.evaluator.evaluate_batch(states, txns)

    def _blend(self, txn: Transaction, outcome: RuleOutcome, ml: float | None) -> FraudDecision:
        score = (
            outcome.rules_score
            if ml is None
            else (self.alpha * ml + (1 - self.alpha) * outcome.rules_score)
        )
        if outcome.blocked and score < self.threshold:
            score = self.threshold
        return FraudDecision(
            transaction_id=txn.transaction_id,
            customer_id=txn.customer_id,
            store_id=txn.store_id,
            amount=txn.amount,
            event_time=txn.timestamp,
            score=score,
            rules_score=outcome.rules_score,
            ml_score=ml,
            is_alert=score >= self.threshold,
            reasons=outcome.reasons,
            rules_version=self.rules.version,
            model_version=self.model_version,
        )

    def decide(self, txn: Transaction, outcome: RuleOutcome) -> FraudDecision:
        ml = None
        if self.model is not None:
            ml = self.model.calibrate_one(self.model.raw_score_one(outcome.features))
        return self._blend(txn, outcome, ml)

    def decide_batch(
        self, txns: Sequence[Transaction], outcomes: Sequence[RuleOutcome]
    ) -> list[FraudDecision]:
        """:meth:`decide` for many outcomes: one forest walk, and the blend as array arithmetic
        (the same IEEE operations in the same order as :meth:`_blend`, so the same floats)."""
        if self.model is None or not outcomes:
            return [self._blend(t, o, None) for t, o in zip(txns, outcomes, strict=True)]
        n = len(outcomes)
        # One flat pass over the feature tuples: half the cost of np.array(list of tuples).
        features = chain.from_iterable([o.features for o in outcomes])
        ml = self.model.scores(
            np.fromiter(features, dtype=np.float64, count=n * len(FEATURE_NAMES)).reshape(n, -1)
        )
        rules = np.fromiter([o.rules_score for o in outcomes], dtype=np.float64, count=n)
        blocked = np.fromiter([o.blocked for o in outcomes], dtype=np.bool_, count=n)
        score = self.alpha * ml + (1 - self.alpha) * rules
        score[blocked & (score < self.threshold)] = self.threshold
        alert = score >= self.threshold
        rules_version, model_version = self.rules.version, self.model_version
        return [
            FraudDecision(
                t.transaction_id,
                t.customer_id,
                t.store_id,
                t.amount,
                t.timestamp,
                s,
                o.rules_score,
                m,
                a,
                o.reasons,
                rules_version,
                model_version,
            )
            for t, o, s, m, a in zip(
                txns, outcomes, score.tolist(), ml.tolist(), alert.tolist(), strict=True
            )
        ]
