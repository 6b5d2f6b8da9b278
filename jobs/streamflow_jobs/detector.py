"""The fraud detector: rules (FR-001..FR-005) blended with the ML score (FR-006).

One :class:`Detector` serves the Flink fraud-detector and ``streamflow replay``. Evaluation is two
steps so that batch callers can score the model once per batch:

1. :meth:`Detector.evaluate` runs the rules for one transaction and updates the customer's state
   (sequential by nature: each transaction sees the history before it);
2. :meth:`Detector.decide_batch` scores the features of many outcomes with the forest at once and
   blends. The state never depends on the ML score, so batching cannot change any decision;
   :meth:`Detector.decide` is the same for a single outcome, with the same float operations.

:meth:`Detector.process` is both steps for one event, as the streaming job calls it.

``score = ml_alpha * ml + (1 - ml_alpha) * rules``. The default alpha (0.7) leans on the model,
which ranks best (docs/benchmarks.md); the rules add their reasons and lift what they confirm. A
block rule (FR-005, the blacklist) is the exception: like a block list in Stripe Radar, it
overrides the blend and raises the score to the alert threshold, so a listed customer or store
always alerts.

A transaction the customer's state remembers (same id) is not scored again: a copy with the same
content gets the first decision, a copy with other content is a ``conflicting_duplicate`` failure
(a dead letter), and neither changes the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import msgspec
import numpy as np

from streamflow_jobs.dedup import encode_remembered, recall
from streamflow_jobs.events import (
    FraudDecision,
    ParseFailure,
    ShadowVerdict,
    Transaction,
    epoch_ms,
)
from streamflow_jobs.model.drivers import model_reason
from streamflow_jobs.model.features import MODEL_INPUTS, SEVERITY_NAMES
from streamflow_jobs.model.forest import ModelArtifactError
from streamflow_jobs.model.loader import Scorer
from streamflow_jobs.rules.config import RulesConfig
from streamflow_jobs.rules.evaluator import (
    ACTIONS,
    ALLOW,
    BLOCK,
    REVIEW,
    RuleOutcome,
    RulesEvaluator,
    remember_decisions,
)
from streamflow_jobs.state import CustomerState


@dataclass(frozen=True, slots=True)
class Detection:
    """What :meth:`Detector.process` made of one event: a decision (``duplicate`` when it is the
    remembered decision of a transaction seen before) or a failure for the dead letters."""

    decision: FraudDecision | None
    failure: ParseFailure | None = None
    duplicate: bool = False


class Detector:
    def __init__(
        self, rules: RulesConfig, model: Scorer | None, shadow: Detector | None = None
    ) -> None:
        if model is not None and not set(model.inputs) <= set(MODEL_INPUTS):
            raise ModelArtifactError(
                f"model {model.model_version} expects inputs {list(model.inputs)}, "
                f"this detector builds {list(MODEL_INPUTS)}"
            )
        self.rules = rules
        self.model = model
        self.evaluator = RulesEvaluator(rules)
        # Without a model the blend is the rules score alone.
        # A model that reads the rules' severities (a supervised one trained on them) already
        # weighs the rules: its probability is the score. Blending the rules in again would
        # count them twice. ``ml_alpha`` blends a model that does not see them (the forest).
        self.combines_rules = model is not None and bool(set(model.inputs) & set(SEVERITY_NAMES))
        self.alpha = 0.0 if model is None else 1.0 if self.combines_rules else rules.ml_alpha
        self.model_version = model.model_version if model is not None else None
        self.rules_version = rules.content_version
        self.threshold = rules.alert_threshold
        self.block_threshold = rules.block_threshold
        self.max_clock_skew_ms = rules.event_time.max_clock_skew_seconds * 1000
        # A challenger (other rules and/or model) run beside this detector with its own
        # per-customer state: its verdict rides along on each decision (``shadow``) and changes
        # nothing about it.
        if shadow is not None and shadow.shadow is not None:
            raise ValueError("a shadow detector cannot have a shadow of its own")
        self.shadow: Detector | None = shadow

    # ---- the streaming path -------------------------------------------------------------------
    def check_clock(self, txn: Transaction, now_ms: int) -> ParseFailure | None:
        """For live streams only (replays read history): an event too far ahead of the
        processing clock cannot be scored honestly and is refused."""
        if not self.max_clock_skew_ms:
            return None
        ahead = epoch_ms(txn.timestamp) - now_ms
        if ahead <= self.max_clock_skew_ms:
            return None
        return ParseFailure(
            "timestamp_in_future",
            f"timestamp: {txn.timestamp.isoformat()} is {ahead / 1000:,.0f} s ahead of the "
            f"processing clock (tolerance {self.max_clock_skew_ms // 1000} s)",
        )

    def process(
        self,
        state: CustomerState,
        txn: Transaction,
        now_ms: int | None = None,
        shadow_state: CustomerState | None = None,
    ) -> Detection:
        """One event, as the Flink job handles it: the clock check (when ``now_ms`` is given),
        the rules (updating ``state``), then the decision; with a shadow, the challenger's
        verdict from its own ``shadow_state`` rides along."""
        if now_ms is not None and (late := self.check_clock(txn, now_ms)) is not None:
            return Detection(None, late)
        outcome = self.evaluator.evaluate(state, txn)
        if outcome.conflict is not None:
            return Detection(None, ParseFailure("conflicting_duplicate", outcome.conflict))
        decision = self.decide(txn, outcome)
        if self.shadow is not None and shadow_state is not None:
            challenger = self.shadow.process(shadow_state, txn)
            if challenger.decision is not None:
                decision = with_shadow(decision, challenger.decision)
        return Detection(decision, None, outcome.repeat_of is not None)

    # ---- the two steps ------------------------------------------------------------------------
    def evaluate(self, state: CustomerState, txn: Transaction) -> RuleOutcome:
        return self.evaluator.evaluate(state, txn)

    def evaluate_batch(
        self, states: dict[str, CustomerState], txns: list[Transaction]
    ) -> list[RuleOutcome]:
        return self.evaluator.evaluate_batch(states, txns)

    def _model_driven(self, outcome: RuleOutcome) -> bool:
        """The rules alone would not have alerted: the model's score did."""
        return outcome.action == ALLOW and outcome.rules_score < self.threshold

    def _blend(
        self, txn: Transaction, outcome: RuleOutcome, ml: float | None, record: bool = True
    ) -> FraudDecision:
        score = (
            outcome.rules_score
            if ml is None
            else (self.alpha * ml + (1 - self.alpha) * outcome.rules_score)
        )
        level = outcome.action
        reasons = outcome.reasons
        if score >= self.threshold:
            level = max(level, BLOCK if score >= self.block_threshold else REVIEW)
            if ml is not None and self._model_driven(outcome):
                reasons = [*reasons, model_reason(self.model, outcome, ml, self.threshold)]
        decision = FraudDecision(
            transaction_id=txn.transaction_id,
            customer_id=txn.customer_id,
            store_id=txn.store_id,
            amount=txn.amount,
            event_time=txn.timestamp,
            score=score,
            rules_score=outcome.rules_score,
            ml_score=ml,
            is_alert=level > ALLOW,
            action=ACTIONS[level],
            reasons=reasons,
            rules_version=self.rules_version,
            model_version=self.model_version,
        )
        if outcome.seen is not None:
            # The per-event path (the stream) stores the state after each event: the record is
            # built now, while the transaction is at hand.
            outcome.seen.decided_as(decision, encode_remembered(txn, decision) if record else None)
        return decision

    def decide(self, txn: Transaction, outcome: RuleOutcome) -> FraudDecision:
        """The decision for one evaluated outcome (not a conflict: that is a dead letter)."""
        if outcome.repeat_of is not None:
            _refuse_conflict(outcome)
            return recall(outcome.repeat_of, txn)
        ml = None
        if self.model is not None:
            row = self.model.input_row(outcome.features, outcome.severities)
            ml = self.model.calibrate_one(self.model.raw_score_one(row))
        return self._blend(txn, outcome, ml)

    def decide_batch(
        self, txns: Sequence[Transaction], outcomes: Sequence[RuleOutcome]
    ) -> list[FraudDecision]:
        """:meth:`decide` for many outcomes: one forest walk, and the blend as array arithmetic
        (IEEE multiply and add, in the same order as :meth:`_blend`, so the same floats; the
        power and the calibration are the scalar operations of the per-event path)."""
        fresh = [i for i, o in enumerate(outcomes) if o.repeat_of is None]
        if self.model is None or not fresh:
            return [
                self._blend(t, o, None, record=False) if o.repeat_of is None else self.decide(t, o)
                for t, o in zip(txns, outcomes, strict=True)
            ]
        if len(fresh) < len(outcomes):
            # Repeats take their remembered decision, possibly one made earlier in this batch,
            # so decisions are built in input order.
            chosen = self._decide_fresh([txns[i] for i in fresh], [outcomes[i] for i in fresh])
            decided = dict(zip(fresh, chosen, strict=True))
            out = []
            for i, (t, o) in enumerate(zip(txns, outcomes, strict=True)):
                out.append(decided[i] if i in decided else self.decide(t, o))
            return out
        return self._decide_fresh(txns, outcomes)

    def shadow_batch(
        self,
        shadow_states: dict[str, CustomerState],
        txns: list[Transaction],
        decisions: list[FraudDecision],
    ) -> list[FraudDecision]:
        """``decisions`` (this detector's, on ``txns``) each carrying the challenger's verdict on
        the same event, from the challenger's own per-customer ``shadow_states``. An event the
        challenger finds a conflicting duplicate (possible only if its state differs) keeps no
        verdict: the live decision is what counts."""
        if self.shadow is None:
            return decisions
        outcomes = self.shadow.evaluate_batch(shadow_states, txns)
        kept = [i for i, o in enumerate(outcomes) if o.conflict is None]
        verdicts = dict(
            zip(
                kept,
                self.shadow.decide_batch([txns[i] for i in kept], [outcomes[i] for i in kept]),
                strict=True,
            )
        )
        return [
            with_shadow(d, verdicts[i]) if i in verdicts else d for i, d in enumerate(decisions)
        ]

    def _decide_fresh(
        self, txns: Sequence[Transaction], outcomes: Sequence[RuleOutcome]
    ) -> list[FraudDecision]:
        assert self.model is not None
        n = len(outcomes)
        # One flat pass over the feature tuples: half the cost of np.array(list of tuples).
        model = self.model
        features = chain.from_iterable(
            [model.input_row(o.features, o.severities) for o in outcomes]
        )
        ml_scores = self.model.scores(
            np.fromiter(features, dtype=np.float64, count=n * len(model.inputs)).reshape(n, -1)
        )
        ml = np.array(ml_scores, dtype=np.float64)
        rules = np.fromiter([o.rules_score for o in outcomes], dtype=np.float64, count=n)
        score = self.alpha * ml + (1 - self.alpha) * rules
        scores = score.tolist()
        review, block = self.threshold, self.block_threshold
        levels = [
            max(o.action, BLOCK if s >= block else REVIEW if s >= review else ALLOW)
            for o, s in zip(outcomes, scores, strict=True)
        ]
        actions = [ACTIONS[level] for level in levels]
        alerts = [level > ALLOW for level in levels]
        reasons = [
            [*o.reasons, model_reason(model, o, m, review)]
            if s >= review and self._model_driven(o)
            else o.reasons
            for o, s, m in zip(outcomes, scores, ml_scores, strict=True)
        ]
        rules_version, model_version = self.rules_version, self.model_version
        decisions = [
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
                act,
                r,
                rules_version,
                model_version,
            )
            for t, o, s, m, a, act, r in zip(
                txns, outcomes, scores, ml_scores, alerts, actions, reasons, strict=True
            )
        ]
        remember_decisions(
            outcomes, scores, ml_scores, alerts, actions, reasons, rules_version, model_version
        )
        return decisions


def with_shadow(decision: FraudDecision, challenger: FraudDecision) -> FraudDecision:
    """``decision`` carrying ``challenger``'s verdict (and nothing else of it)."""
    return msgspec.structs.replace(
        decision,
        shadow=ShadowVerdict(
            challenger.score,
            challenger.rules_score,
            challenger.action,
            challenger.is_alert,
            challenger.ml_score,
            challenger.reasons,
            challenger.rules_version,
            challenger.model_version,
        ),
    )


def _refuse_conflict(outcome: RuleOutcome) -> None:
    if outcome.conflict is not None:
        raise ValueError(f"a conflicting duplicate has no decision: {outcome.conflict}")
