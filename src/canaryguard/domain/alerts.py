"""Alerts: what a notification says of an event, and which channels it goes to.

Every deployment event becomes one ``RollbackAlert`` with a level and a sentence a person on
call can act on; a channel's ``ChannelRule`` decides whether it wants it. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from canaryguard.domain.events import (
    AutoRollbackTriggered,
    AutoRollbackVetoed,
    CanaryAborted,
    CanaryPromoted,
    CanaryStarted,
    ConfigChanged,
    DeploymentCreated,
    EventRecord,
    ManualRollbackInitiated,
    PolicyPublished,
    RegressionDetected,
    RollbackCancelled,
    RollbackCompleted,
    RollbackFailed,
    RollbackProgress,
    SnapshotCreated,
    SplitChanged,
)
from canaryguard.domain.models import AlertLevel, RollbackAlert

__all__ = ["LEVEL_ORDER", "POSSIBLE_LEVELS", "ChannelRule", "alert_for", "can_fire"]

LEVEL_ORDER: dict[AlertLevel, int] = {
    AlertLevel.INFO: 0,
    AlertLevel.WARNING: 1,
    AlertLevel.CRITICAL: 2,
    AlertLevel.EMERGENCY: 3,
}


_I, _W, _C, _E = AlertLevel.INFO, AlertLevel.WARNING, AlertLevel.CRITICAL, AlertLevel.EMERGENCY
# The levels each event type's alert can have (``_describe`` decides which; a test checks that
# the two agree), so a channel file can be told when a channel could never fire.
POSSIBLE_LEVELS: dict[str, frozenset[AlertLevel]] = {
    "io.canaryguard.rollback.auto_triggered": frozenset({_C}),
    "io.canaryguard.canary.regression_detected": frozenset({_C}),
    "io.canaryguard.rollback.auto_vetoed": frozenset({_W}),
    "io.canaryguard.rollback.manual_initiated": frozenset({_W}),
    "io.canaryguard.rollback.failed": frozenset({_E}),
    "io.canaryguard.rollback.completed": frozenset({_I, _C}),
    "io.canaryguard.rollback.progress": frozenset({_I}),
    "io.canaryguard.rollback.cancelled": frozenset({_I}),
    "io.canaryguard.canary.aborted": frozenset({_W}),
    "io.canaryguard.canary.started": frozenset({_I}),
    "io.canaryguard.canary.promoted": frozenset({_I}),
    "io.canaryguard.split.changed": frozenset({_I}),
    "io.canaryguard.config.changed": frozenset({_I}),
    "io.canaryguard.snapshot.created": frozenset({_I}),
    "io.canaryguard.deployment.created": frozenset({_I}),
}


def can_fire(min_level: AlertLevel, events: tuple[str, ...]) -> bool:
    """Whether a channel at ``min_level`` wanting ``events`` (shell patterns; empty: all)
    could ever get an alert."""
    return any(
        LEVEL_ORDER[level] >= LEVEL_ORDER[min_level]
        and (not events or any(fnmatchcase(event_type, p) for p in events))
        for event_type, levels in POSSIBLE_LEVELS.items()
        for level in levels
    )


def alert_for(record: EventRecord) -> RollbackAlert | None:
    """The alert an event raises, or None for events about no deployment (a policy push)."""
    event = record.event
    name = record.deployment
    if name is None or isinstance(event, PolicyPublished):
        return None
    level, text = _describe(event)
    metrics = (
        event.metrics if isinstance(event, AutoRollbackTriggered | RegressionDetected) else None
    )
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
        case RegressionDetected(reason=reason, action="veto_window", veto_until=until):
            at = until.strftime("%H:%M:%S UTC") if until is not None else "the window's end"
            return (
                AlertLevel.CRITICAL,
                f"canary is worse than stable, automatic rollback at {at} unless vetoed "
                f"(canaryguard deploy veto): {reason}",
            )
        case RegressionDetected(reason=reason):
            return (
                AlertLevel.CRITICAL,
                f"canary is worse than stable and automatic rollback is off: {reason}",
            )
        case AutoRollbackVetoed(vetoed_by=who, reason=reason):
            return AlertLevel.WARNING, f"automatic rollback vetoed by {who} (it was: {reason})"
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
    # an event type added without a case here: still an alert, in plain words (a test walks
    # every type, so this is a safety net, not the way new types are meant to be described)
    return AlertLevel.INFO, type(event).__name__


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
