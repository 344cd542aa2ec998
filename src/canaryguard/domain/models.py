"""The domain's records: policies, deployments, rollback configuration, snapshots, rollbacks,
metrics and audit entries. Immutable pydantic models with a stable JSON form."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from canaryguard.domain.assignment import Split, Variant
from canaryguard.domain.conditions import Condition
from canaryguard.domain.histogram import MAX_BUCKET

__all__ = [
    "AlertLevel",
    "Assignment",
    "AuditRecord",
    "Deployment",
    "DeploymentState",
    "MetricsSnapshot",
    "Observation",
    "PolicyDocument",
    "PolicyRef",
    "PolicyVersion",
    "PrometheusSelectors",
    "RollbackAlert",
    "RollbackConfig",
    "RollbackKind",
    "RollbackMetrics",
    "RollbackMode",
    "RollbackRecord",
    "RollbackStage",
    "RollbackStatus",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotKind",
    "StagedRollbackConfig",
    "SuccessCriterion",
    "VariantMetrics",
]

Percent = Annotated[float, Field(ge=0, le=100)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentState(StrEnum):
    """Where a deployment is in its life; the transition table is in ``domain.states``."""

    IDLE = "idle"
    VALIDATING = "validating"
    CANARY_ACTIVE = "canary_active"
    SCALING = "scaling"
    FULLY_DEPLOYED = "fully_deployed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class PolicyRef(_Frozen):
    """One version of one policy, pinned by its content hash."""

    name: str
    version: str
    content_hash: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class PolicyVersion(_Frozen):
    """An immutable, published version of a policy document."""

    name: str
    version: str
    seq: int = Field(ge=1, description="1 for the first version of this policy, then +1")
    content_hash: str
    document: dict[str, Any]
    description: str = ""
    created_at: AwareDatetime
    created_by: str

    @property
    def ref(self) -> PolicyRef:
        return PolicyRef(name=self.name, version=self.version, content_hash=self.content_hash)


class SuccessCriterion(_Frozen):
    """A check a rollback stage must pass before the next one (used by staged rollback)."""

    metric: Literal["error_rate", "mean_latency_ms", "max_latency_ms"]
    max_value: float = Field(ge=0)


class RollbackStage(_Frozen):
    """One step of a staged rollback: bring the canary share down to ``target_percentage``."""

    name: str = Field(min_length=1, max_length=64)
    target_percentage: Percent
    max_duration_seconds: float = Field(default=300, gt=0, le=86_400)
    success_criteria: tuple[SuccessCriterion, ...] = ()


def _default_stages() -> tuple[RollbackStage, ...]:
    return (
        RollbackStage(name="half", target_percentage=50),
        RollbackStage(name="quarter", target_percentage=25),
        RollbackStage(name="tenth", target_percentage=10),
        RollbackStage(name="stable", target_percentage=0),
    )


class StagedRollbackConfig(_Frozen):
    """How a staged rollback walks traffic back; stages at or above the current share are
    skipped. After each stage the executor waits ``stage_interval_seconds``; with
    ``evaluate_between_stages`` it then checks the stage's success criteria on the stable side
    (which takes the returning traffic). Failed criteria ``escalate`` (the rest at once: the
    target snapshot restored) or ``hold`` (re-checked until the stage's ``max_duration_seconds``
    runs out, then escalated). ``total_timeout_seconds`` bounds the whole rollback the same way.
    """

    stages: tuple[RollbackStage, ...] = Field(default_factory=_default_stages, min_length=1)
    stage_interval_seconds: float = Field(default=30, ge=0, le=3_600)
    evaluate_between_stages: bool = True
    on_criteria_failure: Literal["escalate", "hold"] = "escalate"
    total_timeout_seconds: float = Field(default=3_600, gt=0, le=86_400)

    @model_validator(mode="after")
    def _stages_descend_to_zero(self) -> StagedRollbackConfig:
        targets = [stage.target_percentage for stage in self.stages]
        if any(later >= earlier for earlier, later in pairwise(targets)):
            raise ValueError(f"stage targets must strictly decrease, got {targets}")
        if targets[-1] != 0:
            raise ValueError("the last stage must bring the canary share to 0 %")
        return self


class RollbackKind(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class RollbackMode(StrEnum):
    IMMEDIATE = "immediate"
    STAGED = "staged"


class RollbackStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in (RollbackStatus.PENDING, RollbackStatus.RUNNING)


# a PromQL series selector: a metric name with optional label matchers (no functions: canaryguard
# reads the raw samples of the series it selects)
# (label values in double quotes, the only place braces may be, so nothing can follow the
# selector: single quotes, backticks and comments, which PromQL reads otherwise, and control
# characters are refused)
SELECTOR = r'^[A-Za-z_:][A-Za-z0-9_:]*(\{(?:[^{}"\'`#\x00-\x1f]|"(?:[^"\\\x00-\x1f]|\\.)*")*\})?$'
Selector = Annotated[str, Field(min_length=1, max_length=1_000, pattern=SELECTOR)]


class PrometheusSelectors(_Frozen):
    """Where a deployment's outcomes are read from Prometheus, instead of (or besides) the
    clients' reports: counters and a histogram whose series carry the variant in a label.

    Each is a series selector, ``metric{label="value", ...}``; canaryguard reads the raw samples
    of every series it selects and counts their increases per second and variant
    (``docs/operations.md``, Reading metrics from Prometheus).
    """

    requests: Selector = Field(
        description='counter of requests, e.g. http_requests_total{service="payments"}'
    )
    errors: Selector = Field(
        description="counter of failed requests, e.g. "
        'http_requests_total{service="payments",code=~"5.."}'
    )
    latency: Selector | None = Field(
        default=None,
        description="histogram of request durations without its _bucket suffix, e.g. "
        'http_request_duration_seconds{service="payments"} (its _bucket and _sum series '
        "are read); null: no latency",
    )
    latency_unit: Literal["seconds", "milliseconds"] = Field(
        default="seconds", description="the unit of the histogram's le edges and _sum"
    )
    variant_label: str = Field(
        default="variant",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=128,
        description="the label whose value, stable or canary, names the variant of a series",
    )


class RollbackConfig(_Frozen):
    """Per-deployment rollback settings, changeable at run time."""

    auto_rollback_enabled: bool = True
    auto_rollback_mode: RollbackMode = Field(
        default=RollbackMode.IMMEDIATE,
        description="how the monitor rolls back: at once, or in the stages of staged_rollback",
    )
    error_rate_threshold: float = Field(default=0.05, gt=0, le=1)
    response_time_threshold_ms: float = Field(default=1_000, gt=0, le=600_000)
    evaluation_window_minutes: float = Field(default=5, gt=0, le=1_440)
    staged_rollback: StagedRollbackConfig = Field(default_factory=StagedRollbackConfig)
    max_snapshots: int = Field(default=50, ge=1, le=10_000)
    confirmation_timeout_seconds: float = Field(default=300, gt=0, le=86_400)
    require_second_person: bool = Field(
        default=False,
        description="a manual rollback must be confirmed by someone other than who started it",
    )
    detector_enabled: bool = Field(
        default=True, description="the sequential canary-vs-stable tests (docs/detection.md)"
    )
    alpha: float = Field(
        default=0.01, gt=0, le=0.2, description="false-rollback budget per canary (detector)"
    )
    warmup_seconds: float = Field(
        default=0, ge=0, le=86_400, description="seconds after canary start that are not judged"
    )
    history_seconds: int = Field(
        default=600,
        ge=0,
        le=3_600,
        description="seconds of stable's traffic before the canary started from which the "
        "detector learns how much stable's rates wobble and its latency quantiles (0: none)",
    )
    dispersion_block_seconds: int | None = Field(
        default=None,
        ge=2,
        le=600,
        description="the blocks of seconds over which the detector measures how much rates "
        "wander: longer ones see slower swings, and make detection slower; null: 10, or 60 "
        "when stable's error rate over the last hour swings over minutes (docs/detection.md)",
    )
    veto_seconds: float = Field(
        default=0,
        ge=0,
        le=3_600,
        description="an automatic rollback waits this long for an operator's veto (0: none)",
    )
    min_requests: int = Field(
        default=100, ge=1, le=10**9, description="canary requests before a threshold is judged"
    )
    prometheus: PrometheusSelectors | None = Field(
        default=None,
        description="read this deployment's outcomes from the server's Prometheus "
        "(serve --prometheus URL) with these selectors; null: only what clients report",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="more conditions: thresholds (absolute or relative to stable), CEL, extensions",
    )

    @property
    def window_seconds(self) -> int:
        """The evaluation window in whole seconds, at least one (the window counts settled
        seconds: ``evaluation_window_minutes`` 0.01 is a one-second window, not an empty one)."""
        return max(1, math.ceil(self.evaluation_window_minutes * 60))


class Deployment(_Frozen):
    """One rollout target: who gets which policy version, in which state, at which revision."""

    name: str
    revision: int = Field(ge=1)
    state: DeploymentState
    state_reason: str | None = None
    state_since: AwareDatetime
    stable: PolicyRef
    canary: PolicyRef | None = None
    split: Split
    config: RollbackConfig = Field(default_factory=RollbackConfig)
    baseline_snapshot_id: str | None = Field(
        default=None,
        description="the snapshot taken when the current (or last promoted) canary started: "
        "what a rollback without a target returns to",
    )
    canary_run: str | None = Field(
        default=None,
        description="what began the current canary run when a rollback restored the canary "
        "(the pre-rollback snapshot): a new run, judged afresh; null: the canary's start "
        "(baseline_snapshot_id) began it",
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @property
    def run_id(self) -> str | None:
        """The current (or last) canary run: what its judgement, checkpoint and veto are
        kept under."""
        return self.canary_run or self.baseline_snapshot_id


class Assignment(_Frozen):
    """What one request gets: the variant, its policy version in full, and the revision it
    was decided at (so every request is served by exactly one consistent state)."""

    deployment: str
    revision: int
    variant: Variant
    policy: PolicyRef
    document: dict[str, Any]


HistogramBucket = Annotated[int, Field(ge=0, le=MAX_BUCKET)]
HistogramCount = Annotated[int, Field(ge=0, le=10**12)]


class Observation(_Frozen):
    """Outcomes of one variant of one deployment in one second, as clients pre-aggregate them.

    ``histogram`` is a log-bucket latency histogram (``domain.histogram``) whose counts add up
    to ``requests`` when latencies were measured (it may be empty when they were not).
    """

    deployment: str = Field(min_length=1, max_length=256)
    variant: Variant
    second: int = Field(ge=0, le=2**40, description="Unix time, whole seconds (UTC)")
    revision: int | None = Field(default=None, ge=1, le=2**62)
    requests: int = Field(ge=0, le=10**12)
    errors: int = Field(ge=0, le=10**12)
    # bounded so that sums over many observations stay far from overflowing to infinity
    latency_sum_ms: float = Field(default=0, ge=0, le=1e18, allow_inf_nan=False)
    latency_max_ms: float = Field(default=0, ge=0, le=1e18, allow_inf_nan=False)
    histogram: dict[HistogramBucket, HistogramCount] = Field(
        default_factory=dict, max_length=MAX_BUCKET + 1
    )

    def inconsistency(self) -> str | None:
        """What is wrong across fields, or None. Checked by ingestion for every entry of a batch,
        not by a model validator: a Python validator per entry doubled the cost of parsing a
        batch, on the server's busiest endpoint."""
        if self.errors > self.requests:
            return f"errors ({self.errors}) exceed requests ({self.requests})"
        if self.histogram and sum(self.histogram.values()) != self.requests:
            return "histogram counts must add up to requests"
        return None


class VariantMetrics(_Frozen):
    """What the store knows of one variant's outcomes over a window."""

    requests: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)
    latency_sum_ms: float = Field(default=0, ge=0)
    latency_max_ms: float = Field(default=0, ge=0)
    p50_ms: float = Field(default=0, ge=0)
    p90_ms: float = Field(default=0, ge=0)
    p95_ms: float = Field(default=0, ge=0)
    p99_ms: float = Field(default=0, ge=0)

    @property
    def error_rate(self) -> float:
        # at most 1: errors read from a metrics system may run a scrape ahead of the requests
        return min(self.errors / self.requests, 1.0) if self.requests else 0.0

    @property
    def success_rate(self) -> float:
        return 1.0 - self.error_rate if self.requests else 1.0

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_sum_ms / self.requests if self.requests else 0.0


class MetricsSnapshot(_Frozen):
    """Both variants' outcomes over the evaluation window ending at ``until``: the one metrics
    model that snapshots, events, alerts, verdicts and the API share."""

    window_seconds: float = Field(ge=0)
    until: AwareDatetime
    stable: VariantMetrics = Field(default_factory=VariantMetrics)
    canary: VariantMetrics = Field(default_factory=VariantMetrics)


class SnapshotKind(StrEnum):
    """Why a snapshot was taken; automatic ones capture the state just before the change."""

    BEFORE_CANARY = "before_canary"
    BEFORE_PROMOTION = "before_promotion"
    BEFORE_ABORT = "before_abort"
    BEFORE_ROLLBACK = "before_rollback"
    MANUAL = "manual"


class PolicyDocument(_Frozen):
    """A policy version in full, as a snapshot keeps it."""

    ref: PolicyRef
    document: dict[str, Any]


class Snapshot(_Frozen):
    """The complete state of a deployment at one instant. Stored encrypted; restorable exactly."""

    id: str
    deployment: str
    created_at: AwareDatetime
    kind: SnapshotKind
    actor: str
    note: str = ""
    revision: int
    state: DeploymentState
    state_reason: str | None = None
    state_since: AwareDatetime
    stable: PolicyDocument
    canary: PolicyDocument | None = None
    split: Split
    config: RollbackConfig
    baseline_snapshot_id: str | None = None
    metrics: MetricsSnapshot
    metadata: dict[str, str] = Field(default_factory=dict)


class SnapshotInfo(_Frozen):
    """The clear-text index entry of a snapshot: enough to list and retain without a key."""

    id: str
    deployment: str
    seq: int
    created_at: AwareDatetime
    kind: SnapshotKind
    revision: int
    pinned: bool
    key_id: str


class StageProgress(_Frozen):
    """One planned stage of a staged rollback, and when it took effect (exactly once)."""

    name: str
    target_percentage: Percent
    applied_at: AwareDatetime | None = None
    revision: int | None = None
    max_duration_seconds: float = 300
    success_criteria: tuple[SuccessCriterion, ...] = ()


class RollbackRecord(_Frozen):
    """One rollback operation, from request to outcome."""

    id: str
    deployment: str
    kind: RollbackKind
    mode: RollbackMode
    status: RollbackStatus
    target_snapshot_id: str
    pre_snapshot_id: str | None = None
    reason: str
    actor: str
    created_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    duration_ms: float | None = None
    revision_before: int
    revision_after: int | None = None
    error: str | None = None
    partial_completion: float = Field(default=0.0, ge=0, le=1)
    trigger_metrics: MetricsSnapshot | None = None
    expires_at: AwareDatetime | None = Field(
        default=None, description="a pending rollback not confirmed by then expires"
    )
    confirmed_by: str | None = None
    cancelled_by: str | None = None
    stages: tuple[StageProgress, ...] = Field(
        default=(), description="staged: the plan, each stage with when it took effect"
    )
    next_step_at: AwareDatetime | None = Field(
        default=None, description="staged: when the executor takes the next step"
    )
    step_attempts: int = Field(default=0, ge=0, description="failed tries of the next step")
    held: str | None = Field(default=None, description="staged: why it holds (criteria failed)")


class RollbackMetrics(_Frozen):
    """The spec's rollback metrics, for one deployment or for all."""

    total_rollbacks: int = 0
    auto_rollbacks: int = 0
    manual_rollbacks: int = 0
    successful_rollbacks: int = 0
    failed_rollbacks: int = 0
    avg_rollback_duration_ms: float | None = None
    last_rollback_time: datetime | None = None


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


class RollbackAlert(_Frozen):
    level: AlertLevel
    message: str
    timestamp: AwareDatetime
    deployment_id: str
    metrics: MetricsSnapshot | None = None


class AuditRecord(_Frozen):
    """One entry of the append-only, hash-chained audit log."""

    seq: int = Field(ge=1)
    time: AwareDatetime
    actor: str
    action: str
    deployment: str | None = None
    reason: str | None = None
    revision_before: int | None = None
    revision_after: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str
