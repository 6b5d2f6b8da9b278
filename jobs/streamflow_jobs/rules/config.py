"""RulesConfig: the one schema of the detector's configuration.

The same model is the ``rules`` section of the FraudPipeline custom resource, the YAML file given
to ``streamflow replay --rules`` and what the fraud-detector Flink job reads. Defaults are the
original design's (shared/MISSION.md).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

# camelCase in Kubernetes resources (the `rules` section of a FraudPipeline), snake_case in YAML
# files and Python: both are accepted everywhere.
_CONFIG = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

Weight = Annotated[
    float, Field(ge=0, le=1, description="Contribution of this rule to the rules score")
]


Action = Literal["score", "review", "block"]
_ACTION_HELP = (
    "What this rule does on its own when it fires at full severity: score (it only adds to the "
    "score), review (the decision is at least a review alert) or block"
)


class _Rule(BaseModel):
    model_config = _CONFIG

    enabled: bool = True


class HighValueRule(_Rule):
    """FR-001: amount far above the customer's running mean."""

    multiplier: float = Field(
        3.0, gt=1, le=1000, description="Alert when amount > multiplier x mean"
    )
    min_history: int = Field(
        5, ge=1, le=10_000, description="Transactions needed before it applies"
    )
    saturation: float = Field(4.0, gt=1, le=100, description="Full severity at this x threshold")
    weight: Weight = 0.8
    action: Action = Field("review", description=_ACTION_HELP)


class VelocityRule(_Rule):
    """FR-002: too many transactions in a sliding event-time window."""

    max_count: int = Field(5, ge=1, le=30, description="Alert when the window holds more than this")
    window_seconds: int = Field(600, ge=1, le=86_400)
    saturation: float = Field(2.0, gt=1, le=100, description="Full severity at this x threshold")
    weight: Weight = 0.7
    action: Action = Field("review", description=_ACTION_HELP)


class ImpossibleTravelRule(_Rule):
    """FR-003: implied speed between consecutive located transactions above a plausible one."""

    max_speed_kmh: float = Field(500.0, gt=0, le=20_000)
    min_distance_km: float = Field(
        100.0, ge=0, description="Shorter hops are ignored (GPS jitter, same metro area)"
    )
    saturation: float = Field(4.0, gt=1, le=100, description="Full severity at this x threshold")
    weight: Weight = 0.9
    action: Action = Field("review", description=_ACTION_HELP)


class UnusualHourRule(_Rule):
    """FR-004: hour of day far from the customer's usual hours (circular, wraps at midnight)."""

    max_std_devs: float = Field(2.0, gt=0, le=12)
    min_history: int = Field(5, ge=1, le=10_000)
    min_std_hours: float = Field(
        1.0, gt=0, le=12, description="Floor on the spread, so a creature of habit is not flagged"
    )
    saturation: float = Field(2.5, gt=1, le=100, description="Full severity at this x threshold")
    weight: Weight = 0.5
    # Score by default: an hour 5 std devs away is common among legitimate customers
    # (night shifts, travel), and the model weighs it with the rest of the evidence.
    action: Action = Field("score", description=_ACTION_HELP)


class BlacklistRule(_Rule):
    """FR-005: customer or store on a list that can change while the job runs."""

    customers: list[str] = Field(default_factory=list, max_length=100_000)
    stores: list[str] = Field(default_factory=list, max_length=100_000)
    weight: Weight = 1.0
    action: Action = Field(
        "block", description="What a hit does on its own: score, review or block (the default)"
    )


class EventTimePolicy(BaseModel):
    """How event times are trusted (docs/detector-guarantees.md)."""

    model_config = _CONFIG

    max_customer_gap_days: float = Field(
        365.0,
        gt=0,
        le=36_500,
        description="An event this far from the customer's last plausible transaction is flagged "
        "(TS-001) and kept out of the time-based state until a second event confirms it",
    )
    max_clock_skew_seconds: int = Field(
        300,
        ge=0,
        le=86_400,
        description="Live streams only: an event this far ahead of the processing clock is a "
        "dead letter (timestamp_in_future); 0 turns the check off. Replays never use the clock",
    )


class RulesConfig(BaseModel):
    """Thresholds and weights of FR-001..FR-005 and of the blend with the ML score (FR-006)."""

    model_config = _CONFIG

    version: str = Field("1", min_length=1, max_length=64, description="Recorded on every decision")
    alert_threshold: float = Field(
        0.7, gt=0, le=1, description="A review alert when score >= this (the review threshold)"
    )
    block_threshold: float = Field(
        0.95, gt=0, le=1, description="Block when score >= this (at least alert_threshold)"
    )
    ml_alpha: float = Field(
        0.7, ge=0, le=1, description="score = ml_alpha * ml + (1 - ml_alpha) * rules"
    )
    high_value: HighValueRule = HighValueRule()
    velocity: VelocityRule = VelocityRule()
    impossible_travel: ImpossibleTravelRule = ImpossibleTravelRule()
    unusual_hour: UnusualHourRule = UnusualHourRule()
    blacklist: BlacklistRule = BlacklistRule()
    event_time: EventTimePolicy = EventTimePolicy()

    @cached_property
    def content_version(self) -> str:
        """The version recorded on every decision: the declared ``version`` plus a hash of
        everything else, so two different configurations never report the same version."""
        body = self.model_dump(mode="json", exclude={"version"})
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"{self.version}+{digest[:12]}"

    @model_validator(mode="after")
    def _some_rule_enabled(self) -> RulesConfig:
        rules = (
            self.high_value,
            self.velocity,
            self.impossible_travel,
            self.unusual_hour,
            self.blacklist,
        )
        if self.block_threshold < self.alert_threshold:
            raise ValueError("block_threshold must be at least alert_threshold")
        if self.ml_alpha < 1 and not any(r.enabled for r in rules):
            raise ValueError(
                "every rule is disabled and ml_alpha < 1: nothing could raise an alert"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> RulesConfig:
        """Load from a YAML file; a mapping with the same keys as this model (all optional).

        Hostile files fail fast in bounded memory: at most MAX_YAML_BYTES are read and YAML
        aliases are refused (a "billion laughs" file is a few hundred bytes of aliases). Errors
        are ValueErrors of one line per field."""
        with Path(path).open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ValueError(f"larger than {MAX_YAML_BYTES // (1 << 20)} MiB: not a rules file")
        data = load_yaml(raw) or {}
        if not isinstance(data, dict):
            kind = type(data).__name__
            raise ValueError(f"expected a mapping of rule settings, got {kind}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(describe_errors(exc)) from exc

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# A rules file with a blacklist of 100,000 ids is ~2 MiB; anything past this is not one.
MAX_YAML_BYTES = 16 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a configuration file never needs them, and they are
    how a few hundred bytes expand into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(raw: bytes | str) -> Any:
    """Bounded YAML: no aliases; a syntax error is a one-line ValueError."""
    try:
        return yaml.load(raw, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {' '.join(str(exc).split())}") from exc


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors as one readable line per field (no URLs, no input dumps)."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] not in {"missing", "extra_forbidden"} and "input" in error:
            shown = repr(error["input"])
            message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        lines.append(f"{where}: {message}")
    return "\n".join(lines)
