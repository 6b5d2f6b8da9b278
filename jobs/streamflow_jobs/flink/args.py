"""The arguments of the three Flink jobs: one typed definition for the parser and the renderer.

The operator's renderer builds a :class:`JobArgs` and writes :meth:`JobArgs.to_argv` after
``-pym streamflow_jobs.flink.<job>``; each job parses its own argv with :func:`parse_args`.
``parse_args(args.to_argv()) == args`` holds for every valid value (a test checks it), so the
two sides cannot drift apart.

Secrets never travel as arguments (they show in ``ps``, in the FlinkDeployment and in Flink's
web UI): the warehouse connection is the environment variable :data:`POSTGRES_DSN_ENV`, which
the operator fills from CloudNativePG's app secret.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

POSTGRES_DSN_ENV = "STREAMFLOW_POSTGRES_DSN"
RULES_PATH = "/etc/streamflow/rules/rules.yaml"
MODEL_PATH = "/etc/streamflow/model/model.json"
# Kafka's own limits on a topic name: 249 characters of [a-zA-Z0-9._-].
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BOOTSTRAP = re.compile(r"^[^\s,]+:\d{1,5}(,[^\s,]+:\d{1,5})*$")
StartingOffsets = Literal["committed", "earliest", "latest"]
_STARTING: tuple[StartingOffsets, ...] = ("committed", "earliest", "latest")
# The topics (besides transactions) each job needs: the operator's renderer gives each job these
# and no others (render/flink.py's JOB_DEFS is built from this table).
JOB_TOPICS: dict[str, tuple[str, ...]] = {
    "transaction-processor": ("dead_letter_topic",),
    "fraud-detector": ("alerts_topic", "dead_letter_topic"),
    "realtime-aggregator": ("alerts_topic", "metrics_topic"),
}


@dataclass(frozen=True)
class JobArgs:
    """What every StreamFlow job is told. Each job uses the fields it needs."""

    bootstrap_servers: str
    transactions_topic: str
    # Each job is given only the topics it uses (JOB_TOPICS); the others stay None.
    alerts_topic: str | None = None
    metrics_topic: str | None = None
    dead_letter_topic: str | None = None
    # The fraud-detector's rules and model files (None: the mount paths the operator uses).
    rules: str | None = None
    model: str | None = None
    # Compacted topic of blacklist entries (fraud-detector); none: the rules file's list only.
    control_topic: str | None = None
    # A challenger run in shadow by the fraud-detector (its rules and/or model; the other one
    # is the live one), and the topic its verdicts go to. Nothing it decides is acted on.
    shadow_rules: str | None = None
    shadow_model: str | None = None
    shadow_topic: str | None = None
    # Consumer group prefix; a job appends its own name (offsets are also in Flink's state).
    group_id: str = "streamflow"
    # Where a job without state or committed offsets starts reading.
    starting_offsets: StartingOffsets = "committed"
    # Event time: how late an event may arrive and still count in its window (aggregator), and
    # after how long without data a partition stops holding the watermark back.
    max_out_of_orderness_ms: int = 5_000
    idle_timeout_ms: int = 10_000
    # Aggregator: a window is updated (a new revision) for events this late after its end.
    allowed_lateness_ms: int = 60_000
    # Events dated more than this ahead of processing time become dead letters; 0 = off (a
    # replay of history, `streamflow live`). Production turns it on.
    max_clock_skew_seconds: int = 0
    # Windows of the realtime-aggregator, seconds.
    windows: tuple[int, ...] = (60, 300, 3600)
    # A prefix for the Kafka transactional ids: distinct per pipeline and job.
    transactional_id_prefix: str | None = None

    def __post_init__(self) -> None:
        if not _BOOTSTRAP.match(self.bootstrap_servers):
            raise ValueError(f"bootstrap servers: expected host:port[,host:port], got "
                             f"{self.bootstrap_servers!r}")  # fmt: skip
        for name in (
            "transactions_topic",
            "alerts_topic",
            "metrics_topic",
            "dead_letter_topic",
            "control_topic",
            "shadow_topic",
        ):
            if getattr(self, name) is not None:
                _check_topic(name, getattr(self, name))
        if self.starting_offsets not in _STARTING:
            raise ValueError(f"starting offsets: one of {_STARTING}, got {self.starting_offsets!r}")
        for name in (
            "max_out_of_orderness_ms",
            "idle_timeout_ms",
            "allowed_lateness_ms",
            "max_clock_skew_seconds",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 7 * 86_400_000:
                raise ValueError(f"{name.replace('_', ' ')}: must be within 0..7 days, got {value}")
        if not self.windows or any(not 1 <= w <= 86_400 for w in self.windows):
            raise ValueError(f"windows: seconds within 1..86400, got {self.windows}")
        if len(set(self.windows)) != len(self.windows):
            raise ValueError(f"windows: each size once, got {self.windows}")
        has_challenger = self.shadow_rules is not None or self.shadow_model is not None
        if has_challenger != (self.shadow_topic is not None):
            raise ValueError(
                "shadow: --shadow-topic goes with --shadow-rules and/or --shadow-model"
            )

    @classmethod
    def for_topics(
        cls, bootstrap_servers: str, topics: dict[str, str], **options: object
    ) -> JobArgs:
        """From a map of the pipeline's topics (keys ``transactions``, ``alerts``,
        ``metrics``, ``dead-letters`` and optionally ``control``, as the operator names them)."""
        return cls(
            bootstrap_servers=bootstrap_servers,
            transactions_topic=topics["transactions"],
            alerts_topic=topics.get("alerts"),
            metrics_topic=topics.get("metrics"),
            dead_letter_topic=topics.get("dead-letters"),
            shadow_topic=topics.get("shadow"),
            **options,  # type: ignore[arg-type]
        )

    def to_argv(self) -> list[str]:
        """The command-line form (what the renderer writes after ``-pym <module>``): every
        field whose value differs from the default, in declaration order."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, tuple):
                argv += [flag, ",".join(str(v) for v in value)]
            else:
                argv += [flag, str(value)]
        return argv

    def group(self, job: str) -> str:
        return f"{self.group_id}.{job}"

    def transactional_id(self, job: str, sink: str) -> str:
        prefix = self.transactional_id_prefix or f"{self.group_id}.{self.transactions_topic}"
        return f"{prefix}.{job}.{sink}"


def _check_topic(name: str, value: str) -> None:
    if not _TOPIC.match(value) or value in {".", ".."}:
        raise ValueError(f"{name.replace('_', ' ')}: not a Kafka topic name: {value!r}")


def _windows(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated seconds, got {text!r}") from exc


def parser(prog: str = "streamflow-job") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="A StreamFlow Flink job.")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--transactions-topic", required=True)
    p.add_argument("--alerts-topic", default=None)
    p.add_argument("--metrics-topic", default=None)
    p.add_argument("--dead-letter-topic", default=None)
    p.add_argument("--rules", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--control-topic", default=None)
    p.add_argument("--shadow-rules", default=None)
    p.add_argument("--shadow-model", default=None)
    p.add_argument("--shadow-topic", default=None)
    p.add_argument("--group-id", default="streamflow")
    p.add_argument("--starting-offsets", choices=_STARTING, default="committed")
    p.add_argument("--max-out-of-orderness-ms", type=int, default=5_000)
    p.add_argument("--idle-timeout-ms", type=int, default=10_000)
    p.add_argument("--allowed-lateness-ms", type=int, default=60_000)
    p.add_argument("--max-clock-skew-seconds", type=int, default=0)
    p.add_argument("--windows", type=_windows, default=(60, 300, 3600))
    p.add_argument("--transactional-id-prefix", default=None)
    return p


def parse_args(argv: Sequence[str], prog: str = "streamflow-job") -> JobArgs:
    """Parse a job's argv; an invalid value exits 2 with one line naming it (argparse's way)."""
    p = parser(prog)
    namespace = p.parse_args(list(argv))
    for name in JOB_TOPICS.get(prog, ()):
        if getattr(namespace, name) is None:
            p.error(f"the following arguments are required: --{name.replace('_', '-')}")
    try:
        return JobArgs(**vars(namespace))
    except ValueError as exc:
        p.error(str(exc))


def topic(args: JobArgs, name: str) -> str:
    """A topic the job requires (checked by :func:`parse_args`; a programming error if not)."""
    value = getattr(args, name)
    if value is None:
        raise ValueError(f"--{name.replace('_', '-')} is required by this job")
    return str(value)


def postgres_dsn(environ: dict[str, str] | None = None) -> str | None:
    """The warehouse DSN from :data:`POSTGRES_DSN_ENV` (None when unset or empty)."""
    value = (os.environ if environ is None else environ).get(POSTGRES_DSN_ENV, "").strip()
    return value or None
