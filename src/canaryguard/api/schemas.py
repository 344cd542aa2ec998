"""Request and response bodies of the REST API (the domain models are reused where they fit)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict

from canaryguard.domain.access import ApiToken, Role
from canaryguard.domain.assignment import Criterion, Variant
from canaryguard.domain.checks import ConditionResult
from canaryguard.domain.models import (
    AlertLevel,
    Deployment,
    MetricsSnapshot,
    RollbackMetrics,
    RollbackRecord,
)

__all__ = [
    "MAX_SEQ",
    "AbortIn",
    "CanaryIn",
    "ChangeOut",
    "ConfigIn",
    "DeploymentIn",
    "PinIn",
    "PolicySummary",
    "PreconditionIn",
    "PublishIn",
    "RollbackIn",
    "RotateOut",
    "SchemaIn",
    "SnapshotIn",
    "SplitIn",
    "StatusOut",
    "TokenCreatedOut",
    "TokenIn",
    "TokenOut",
    "VerifyOut",
]

# a number, and only a number: pydantic would take true as 1 and "25" as 25 (a canary started
# at 1 % from a mistyped boolean)
Number = Annotated[float, Strict()]
Percent = Field(
    ge=0,
    le=100,
    allow_inf_nan=False,
    description="canary share in percent, in steps of 0.01",
    examples=[10],
)
# sequence numbers and revisions are 64-bit in the database; larger numbers cannot name one
MAX_SEQ = 2**62
Revision = Field(
    default=None,
    ge=1,
    le=MAX_SEQ,
    description="the revision you read; a stale one is refused with 409 (or send If-Match)",
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishIn(_In):
    document: dict[str, Any] = Field(examples=[{"security": {"tls": {"min_version": "1.3"}}}])
    version: str | None = Field(default=None, max_length=64, examples=["2026.11.1"])
    description: str = Field(default="", max_length=2000)


class SchemaIn(_In):
    json_schema: dict[str, Any] = Field(alias="schema", examples=[{"type": "object"}])


class PolicySummary(BaseModel):
    name: str
    latest_version: str
    versions: int


class ChangeOut(BaseModel):
    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


class DeploymentIn(_In):
    name: str = Field(examples=["payments-gateway/security"])
    stable: str = Field(
        description="policy version as name@version", examples=["payments-security@1"]
    )
    config: dict[str, Any] | None = Field(default=None, examples=[{"error_rate_threshold": 0.02}])


class PreconditionIn(_In):
    expected_revision: int | None = Revision


class CanaryIn(PreconditionIn):
    policy: str = Field(examples=["payments-security@2"])
    percent: Number = Percent
    criterion: Criterion = Criterion.USER_ID
    attribute: str | None = Field(default=None, max_length=128)
    canary_groups: list[str] = Field(default_factory=list, max_length=100)
    stable_groups: list[str] = Field(default_factory=list, max_length=100)


class SplitIn(PreconditionIn):
    percent: Number = Percent
    canary_groups: list[str] | None = Field(default=None, max_length=100)
    stable_groups: list[str] | None = Field(default=None, max_length=100)


class AbortIn(PreconditionIn):
    reason: str = Field(min_length=1, max_length=2000, examples=["wrong release window"])


class ConfigIn(PreconditionIn):
    changes: dict[str, Any] = Field(examples=[{"error_rate_threshold": 0.02, "max_snapshots": 100}])


class StatusOut(BaseModel):
    deployment: Deployment
    canary_percent: float
    metrics: MetricsSnapshot
    rollbacks: RollbackMetrics
    open_rollbacks: list[RollbackRecord]


class SnapshotIn(_In):
    note: str = Field(default="", max_length=2000)
    pinned: bool = False
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)


class PinIn(_In):
    pinned: bool


class RollbackIn(PreconditionIn):
    reason: str = Field(min_length=1, max_length=2000, examples=["canary errors 2.1 % vs 1.0 %"])
    to: str | None = Field(
        default=None, description="snapshot id; default: the state before the canary"
    )
    staged: bool = Field(
        default=False,
        description="walk traffic back in the deployment's stages (staged_rollback) instead of "
        "all at once",
    )
    confirm: bool = Field(
        default=True,
        description="false: create a pending rollback that POST /rollbacks/{id}/confirm "
        "carries out (or that expires after confirmation_timeout_seconds)",
    )


class EscalateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, examples=["stage held too long"])


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=64, examples=["ci-deployer"])
    role: Role
    expires_in_days: Number | None = Field(default=None, gt=0, le=3650, allow_inf_nan=False)


class TokenOut(BaseModel):
    name: str
    role: Role
    created_at: AwareDatetime
    created_by: str
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls.model_validate(token.model_dump(exclude={"digest"}))


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the secret; shown this once and never again")


class RotateOut(BaseModel):
    key_id: str
    reencrypted: int
    not_opened: list[str] = Field(
        default_factory=list,
        description="snapshots that do not open (changed in the store, or under a key that is "
        "gone): left under their old keys; the rest were re-encrypted",
    )


class DetectorTestOut(BaseModel):
    """One sequential test's evidence (docs/detection.md)."""

    name: str
    e_value: float
    threshold: float
    dispersion: float
    canary_rate: float
    stable_rate: float
    canary_requests: int
    stable_requests: int


class DecisionOut(BaseModel):
    condition: str
    reason: str
    decided_at: AwareDatetime
    rollback_id: str | None
    veto_until: AwareDatetime | None
    vetoed_by: str | None


class VerdictOut(BaseModel):
    """What the monitor says of the deployment's canary now."""

    deployment: str
    judged: bool = Field(description="a canary run is under judgement")
    verdict: str = Field(description="healthy, inconclusive, regression, or not_judged")
    condition: str = ""
    reason: str = ""
    tests: list[DetectorTestOut] = Field(default_factory=list)
    dispersion_block_seconds: int | None = Field(
        default=None,
        description="the detector's dispersion block in this run: the configured one, or the "
        "one chosen from stable's last hour (60 when it swings over minutes, else 10)",
    )
    conditions: list[ConditionResult] = Field(default_factory=list)
    judged_until: int | None = Field(default=None, description="the last second judged (Unix time)")
    waiting: str = Field(
        default="",
        description="what keeps Prometheus' outcomes of the deployment from the monitor: "
        "its first read pending, or reads failing (the monitor waits up to 60 s, then judges "
        "without them); empty when reads succeed or the deployment is not read from Prometheus",
    )
    metrics: MetricsSnapshot | None = Field(
        default=None, description="the evaluation window, up to the last settled second"
    )
    since_start: MetricsSnapshot | None = Field(
        default=None, description="everything since the canary run started (at most 6 hours)"
    )
    decision: DecisionOut | None = None


class SecondOut(BaseModel):
    """One variant's outcomes in one second."""

    second: int
    variant: Variant
    requests: int
    errors: int
    latency_sum_ms: float
    latency_max_ms: float
    histogram: dict[int, int]


class ChannelOut(BaseModel):
    """A notification channel: what it wants, where its cursor is, and what this replica sent."""

    name: str
    kind: str = Field(description="webhook, slack or email")
    min_level: AlertLevel
    deployments: list[str] = Field(description="shell patterns; empty: every deployment")
    events: list[str] = Field(description="shell patterns of event types; empty: every type")
    cursor: int | None = Field(
        description="the sequence number of the last event the channel has dealt with (sent, "
        "or given up on); null until the leading replica first sees the channel"
    )
    sending: bool = Field(description="whether this replica sends (it holds the lease)")
    sent: int = Field(description="alerts delivered by this replica since it started")
    failed: int = Field(description="alerts this replica gave up on since it started")
    retried: int = Field(description="attempts after a first that failed")
    retrying: int | None = Field(
        description="the sequence number of the event the channel waits on (its receiver "
        "failed and it is being retried), if any"
    )
    last_sent_at: AwareDatetime | None
    last_error: str | None
    last_error_at: AwareDatetime | None
