"""Alerts: what a notification says of an event, and which channels it goes to.

Every deployment event becomes one ``RollbackAlert`` with a level and a sentence a person on
call can act on; a channel's ``ChannelRule`` decides whether it wants it. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from canaryguard.domain.events import (
    AutoRollbackTriggered,
    CanaryAborted,
    CanaryPromoted,
    CanaryStarted,
    ConfigChanged,
    DeploymentCreated,
    EventRecord,
    ManualRollbackInitiated,
    PolicyPublished,
    RollbackCancelled,
    RollbackCompleted,
    RollbackFailed,
    RollbackProgress,
    SnapshotCreated,
    SplitChanged,
)
from canaryguard.domain.models import AlertLevel, RollbackAlert

__all__ = ["LEVEL_ORDER", "ChannelRule", "alert_for"]

LEVEL_ORDER: dict[AlertLevel, int] = {
    AlertLevel.INFO: 0,
    AlertLevel.WARNING: 1,
    AlertLevel.CRITICAL: 2,
    AlertLevel.EMERGENCY: 3,
}


def alert_for(record: EventRecord) -> RollbackAlert | None:
    """The alert an event raises, or None for events about no deployment (a policy push)."""
    event = record.event
    name = record.deployment
    if name is None or isinstance(event, PolicyPublished):
        return None
    level, text = _describe(event)
    metrics = event.metrics if isinstance(event, AutoRollbackTriggered) else None
    return RollbackAlert(
        level=level,
        message=f"{name}: {text}",
        timestamp=record.time,
        deployment_id=name,
        metrics=metrics,
    )


def _describe(event: object) -> tuple[AlertLevel, str]:  # noqa: PLR0911, PLR0912 - a case per event
    match event:
        case AutoRollbackTriggered(rollback_id=rid, reason=reason):
            return AlertLevel.CRITICAL, f"canary rolled back automatically ({rid}): {reason}"
        case ManualRollbackInitiated(
            rollback_id=rid, initiated_by=who, target_snapshot_id=to, reason=reason
        ):
            return AlertLevel.WARNING, f"rollback {rid} to {to} started by {who}: {reason}"
        case RollbackFailed(rollback_id=rid, error=error, partial_completion=done):
            return (
                AlertLevel.EMERGENCY,
                f"rollback {rid} FAILED at {done:.0%} done: {error}; the deployment needs "
                "an operator",
            )
        case RollbackCompleted(rollback_id=rid, success=False, final_state=state):
            return AlertLevel.CRITICAL, f"rollback {rid} ended without success (now {state})"
        case RollbackCompleted(rollback_id=rid, duration_ms=ms, final_state=state):
            return AlertLevel.INFO, f"rollback {rid} completed in {ms / 1000:.1f} s (now {state})"
        case RollbackProgress(rollback_id=rid, stage=stage, percentage=pct):
            return AlertLevel.INFO, f"rollback {rid}: stage {stage}, canary at {pct:g} %"
        case RollbackCancelled(rollback_id=rid, status=status, closed_by=who, reason=reason):
            return AlertLevel.INFO, f"rollback {rid} {status} by {who}: {reason}"
        case CanaryAborted(reason=reason):
            return AlertLevel.WARNING, f"canary aborted: {reason}"
        case CanaryStarted(canary=canary, percentage=pct, criterion=criterion):
            return AlertLevel.INFO, f"canary {canary} started at {pct:g} % (by {criterion})"
        case CanaryPromoted(stable=stable):
            return AlertLevel.INFO, f"canary promoted: {stable} is stable"
        case SplitChanged(from_percentage=before, to_percentage=after):
            return AlertLevel.INFO, f"canary split {before:g} % -> {after:g} %"
        case ConfigChanged(changes=changes):
            return AlertLevel.INFO, f"rollback config changed: {', '.join(sorted(changes))}"
        case SnapshotCreated(snapshot_id=sid, kind=kind):
            return AlertLevel.INFO, f"snapshot {sid} taken ({kind})"
        case DeploymentCreated(stable=stable):
            return AlertLevel.INFO, f"deployment created on {stable}"
    raise TypeError(f"no alert text for {type(event).__name__}")  # a new event type: add it


@dataclass(frozen=True)
class ChannelRule:
    """Which alerts a channel wants: at least ``min_level``, and when given, only deployments
    and event types matching one of the shell-style patterns (``checkout-*``,
    ``io.canaryguard.rollback.*``)."""

    min_level: AlertLevel = AlertLevel.WARNING
    deployments: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    def wants(self, alert: RollbackAlert, record: EventRecord) -> bool:
        if LEVEL_ORDER[alert.level] < LEVEL_ORDER[self.min_level]:
            return False
        if self.deployments and not any(
            fnmatchcase(alert.deployment_id, pattern) for pattern in self.deployments
        ):
            return False
        return not self.events or any(fnmatchcase(record.type, p) for p in self.events)
