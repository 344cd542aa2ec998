"""Typed events with a stable JSON form, and their CloudEvents 1.0 envelope.

Every change writes its events in the same transaction (the outbox); the stored log gives each a
sequence number, which is the CloudEvents ``id`` and the SSE ``Last-Event-ID``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from canaryguard.domain.models import DeploymentState, MetricsSnapshot, SnapshotKind

__all__ = [
    "EVENT_TYPE_PREFIX",
    "AutoRollbackTriggered",
    "AutoRollbackVetoed",
    "CanaryAborted",
    "CanaryPromoted",
    "CanaryStarted",
    "ConfigChanged",
    "DeploymentCreated",
    "Event",
    "EventRecord",
    "ManualRollbackInitiated",
    "PolicyPublished",
    "RegressionDetected",
    "RollbackCancelled",
    "RollbackCompleted",
    "RollbackFailed",
    "RollbackProgress",
    "SnapshotCreated",
    "SplitChanged",
    "event_adapter",
]

EVENT_TYPE_PREFIX = "io.canaryguard."


class _EventData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyPublished(_EventData):
    type: Literal["io.canaryguard.policy.published"] = "io.canaryguard.policy.published"
    policy: str
    content_hash: str


class DeploymentCreated(_EventData):
    type: Literal["io.canaryguard.deployment.created"] = "io.canaryguard.deployment.created"
    stable: str


class CanaryStarted(_EventData):
    type: Literal["io.canaryguard.canary.started"] = "io.canaryguard.canary.started"
    canary: str
    percentage: float
    criterion: str
    snapshot_id: str


class SplitChanged(_EventData):
    type: Literal["io.canaryguard.split.changed"] = "io.canaryguard.split.changed"
    from_percentage: float
    to_percentage: float


class CanaryPromoted(_EventData):
    type: Literal["io.canaryguard.canary.promoted"] = "io.canaryguard.canary.promoted"
    stable: str
    snapshot_id: str


class CanaryAborted(_EventData):
    type: Literal["io.canaryguard.canary.aborted"] = "io.canaryguard.canary.aborted"
    reason: str
    snapshot_id: str


class ConfigChanged(_EventData):
    type: Literal["io.canaryguard.config.changed"] = "io.canaryguard.config.changed"
    changes: dict[str, Any]


class SnapshotCreated(_EventData):
    type: Literal["io.canaryguard.snapshot.created"] = "io.canaryguard.snapshot.created"
    snapshot_id: str
    kind: SnapshotKind
    pinned: bool


class AutoRollbackTriggered(_EventData):
    type: Literal["io.canaryguard.rollback.auto_triggered"] = (
        "io.canaryguard.rollback.auto_triggered"
    )
    rollback_id: str
    reason: str
    snapshot_id: str
    metrics: MetricsSnapshot | None


class RegressionDetected(_EventData):
    """The monitor found the canary worse than stable but does not roll it back yet: it waits
    out the veto window (``veto_seconds``), or automatic rollback is off. Either way a person
    should look now; an immediate automatic rollback says the same in its own event instead."""

    type: Literal["io.canaryguard.canary.regression_detected"] = (
        "io.canaryguard.canary.regression_detected"
    )
    condition: str
    reason: str
    action: Literal["veto_window", "auto_rollback_disabled"]
    veto_until: AwareDatetime | None = None
    metrics: MetricsSnapshot | None = None


class AutoRollbackVetoed(_EventData):
    """An operator cancelled a pending automatic rollback in its veto window."""

    type: Literal["io.canaryguard.rollback.auto_vetoed"] = "io.canaryguard.rollback.auto_vetoed"
    vetoed_by: str
    condition: str
    reason: str


class ManualRollbackInitiated(_EventData):
    type: Literal["io.canaryguard.rollback.manual_initiated"] = (
        "io.canaryguard.rollback.manual_initiated"
    )
    rollback_id: str
    initiated_by: str
    target_snapshot_id: str
    reason: str


class RollbackProgress(_EventData):
    type: Literal["io.canaryguard.rollback.progress"] = "io.canaryguard.rollback.progress"
    rollback_id: str
    snapshot_id: str
    stage: str
    percentage: float


class RollbackCompleted(_EventData):
    type: Literal["io.canaryguard.rollback.completed"] = "io.canaryguard.rollback.completed"
    rollback_id: str
    snapshot_id: str
    duration_ms: float
    success: bool
    final_state: DeploymentState


class RollbackCancelled(_EventData):
    """A pending (unconfirmed) rollback closed without running: cancelled by someone, or
    expired after ``confirmation_timeout_seconds``. Nothing changed; the stream sees the end of
    the rollback whose ``manual_initiated`` it saw."""

    type: Literal["io.canaryguard.rollback.cancelled"] = "io.canaryguard.rollback.cancelled"
    rollback_id: str
    status: Literal["cancelled", "expired"]
    closed_by: str
    reason: str


class RollbackFailed(_EventData):
    type: Literal["io.canaryguard.rollback.failed"] = "io.canaryguard.rollback.failed"
    rollback_id: str
    snapshot_id: str
    error: str
    partial_completion: float


Event = Annotated[
    PolicyPublished
    | DeploymentCreated
    | CanaryStarted
    | SplitChanged
    | CanaryPromoted
    | CanaryAborted
    | ConfigChanged
    | SnapshotCreated
    | AutoRollbackTriggered
    | RegressionDetected
    | AutoRollbackVetoed
    | ManualRollbackInitiated
    | RollbackProgress
    | RollbackCompleted
    | RollbackCancelled
    | RollbackFailed,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


class EventRecord(BaseModel):
    """An event as the log keeps it: its sequence number, where and when, and the typed data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    deployment: str | None
    time: AwareDatetime
    revision: int | None
    event: Event

    @property
    def type(self) -> str:
        return self.event.type

    def to_cloudevent(self) -> dict[str, Any]:
        """The CloudEvents 1.0 structured-mode JSON of this event."""
        data = self.event.model_dump(mode="json", exclude={"type"})
        source = f"/deployments/{self.deployment}" if self.deployment else "/policies"
        envelope: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(self.seq),
            "source": source,
            "type": self.event.type,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": data,
        }
        if self.deployment:
            envelope["subject"] = self.deployment
        if self.revision is not None:
            envelope["canaryguardrevision"] = self.revision
        return envelope
