"""What each event says as an alert (level, sentence, figures), and which channels want it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

import pytest

from canaryguard.domain.alerts import POSSIBLE_LEVELS, ChannelRule, alert_for, can_fire
from canaryguard.domain.events import (
    AutoRollbackTriggered,
    AutoRollbackVetoed,
    CanaryAborted,
    CanaryPromoted,
    CanaryStarted,
    ConfigChanged,
    DeploymentCreated,
    Event,
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
from canaryguard.domain.models import (
    AlertLevel,
    DeploymentState,
    MetricsSnapshot,
    RollbackAlert,
    SnapshotKind,
)

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REASON = "canary errors 2.1 % vs stable 1.0 %, e-value 143 >= 100, over 4,120 canary requests"


def record(event: Event, deployment: str | None = "checkout") -> EventRecord:
    return EventRecord(seq=7, deployment=deployment, time=AT, revision=3, event=event)


def completed(success: bool, state: DeploymentState, *, ms: float) -> RollbackCompleted:
    return RollbackCompleted(
        rollback_id="rb1", snapshot_id="s1", duration_ms=ms, success=success, final_state=state
    )


def alert(event: Event) -> RollbackAlert:
    made = alert_for(record(event))
    assert made is not None
    return made


def test_an_automatic_rollback_is_critical_and_carries_its_reason_and_metrics() -> None:
    metrics = MetricsSnapshot(window_seconds=300, until=AT)
    made = alert(
        AutoRollbackTriggered(rollback_id="rb1", reason=REASON, snapshot_id="s1", metrics=metrics)
    )
    assert (made.level, made.deployment_id, made.timestamp, made.metrics) == (
        AlertLevel.CRITICAL,
        "checkout",
        AT,
        metrics,
    )
    assert made.message == f"checkout: canary rolled back automatically (rb1): {REASON}"


def test_a_regression_in_its_veto_window_is_critical_with_the_deadline_and_how_to_veto() -> None:
    metrics = MetricsSnapshot(window_seconds=300, until=AT)
    made = alert(
        RegressionDetected(
            condition="errors",
            reason=REASON,
            action="veto_window",
            veto_until=AT,
            metrics=metrics,
        )
    )
    assert (made.level, made.metrics) == (AlertLevel.CRITICAL, metrics)
    assert made.message == (
        "checkout: canary is worse than stable, automatic rollback at 12:00:00 UTC unless "
        f"vetoed (canaryguard deploy veto): {REASON}"
    )


def test_a_regression_with_automatic_rollback_off_is_critical() -> None:
    made = alert(
        RegressionDetected(condition="errors", reason=REASON, action="auto_rollback_disabled")
    )
    assert made.level is AlertLevel.CRITICAL
    assert "automatic rollback is off" in made.message


def test_a_failed_rollback_is_an_emergency_with_how_far_it_got() -> None:
    made = alert(
        RollbackFailed(rollback_id="rb1", snapshot_id="s1", error="db gone", partial_completion=0.5)
    )
    assert made.level is AlertLevel.EMERGENCY
    assert "FAILED at 50% done: db gone" in made.message


def test_a_manual_rollback_is_a_warning_naming_who_and_why() -> None:
    made = alert(
        ManualRollbackInitiated(
            rollback_id="rb2", initiated_by="alice", target_snapshot_id="s9", reason="pager"
        )
    )
    assert made.level is AlertLevel.WARNING
    assert made.message == "checkout: rollback rb2 to s9 started by alice: pager"


def test_a_rollback_that_completes_is_info_with_its_duration() -> None:
    made = alert(completed(True, DeploymentState.ROLLED_BACK, ms=1530))
    assert made.level is AlertLevel.INFO
    assert "completed in 1.5 s" in made.message


def test_a_rollback_that_completes_without_success_is_critical() -> None:
    made = alert(completed(False, DeploymentState.FAILED, ms=10))
    assert made.level is AlertLevel.CRITICAL


@pytest.mark.parametrize(
    ("event", "level"),
    [
        (CanaryAborted(reason="r", snapshot_id="s"), AlertLevel.WARNING),
        (
            CanaryStarted(canary="sec@2", percentage=10, criterion="user_id", snapshot_id="s"),
            AlertLevel.INFO,
        ),
        (SplitChanged(from_percentage=10, to_percentage=25), AlertLevel.INFO),
        (
            RollbackProgress(rollback_id="rb", snapshot_id="s", stage="half", percentage=5),
            AlertLevel.INFO,
        ),
        (
            RollbackCancelled(rollback_id="rb", status="expired", closed_by="x", reason="r"),
            AlertLevel.INFO,
        ),
    ],
)
def test_the_level_of_each_other_event(event: Event, level: AlertLevel) -> None:
    assert alert(event).level is level


def test_an_event_about_no_deployment_raises_no_alert() -> None:
    assert alert_for(record(PolicyPublished(policy="p", content_hash="h"), deployment=None)) is None


ABORTED = record(CanaryAborted(reason="r", snapshot_id="s"))  # a warning


def wants(rule: ChannelRule) -> bool:
    made = alert_for(ABORTED)
    assert made is not None
    return rule.wants(made, ABORTED)


def test_a_rule_wants_alerts_at_or_above_its_level() -> None:
    assert wants(ChannelRule(AlertLevel.WARNING))
    assert not wants(ChannelRule(AlertLevel.CRITICAL))


def test_a_rule_with_deployment_patterns_wants_only_matching_deployments() -> None:
    assert wants(ChannelRule(AlertLevel.INFO, deployments=("check*",)))
    assert not wants(ChannelRule(AlertLevel.INFO, deployments=("pay*", "search")))


def test_a_rule_with_event_patterns_wants_only_matching_types() -> None:
    assert wants(ChannelRule(AlertLevel.INFO, events=("io.canaryguard.canary.*",)))
    assert not wants(ChannelRule(AlertLevel.INFO, events=("io.canaryguard.rollback.*",)))


# one of every event type that concerns a deployment, each case of _describe among them
EVERY_EVENT: list[Event] = [
    AutoRollbackTriggered(rollback_id="rb", reason="r", snapshot_id="s", metrics=None),
    RegressionDetected(condition="errors", reason="r", action="veto_window", veto_until=AT),
    RegressionDetected(condition="errors", reason="r", action="auto_rollback_disabled"),
    AutoRollbackVetoed(vetoed_by="alice", condition="errors", reason="r"),
    ManualRollbackInitiated(rollback_id="rb", initiated_by="a", target_snapshot_id="s", reason="r"),
    RollbackFailed(rollback_id="rb", snapshot_id="s", error="e", partial_completion=0.5),
    completed(True, DeploymentState.ROLLED_BACK, ms=1),
    completed(False, DeploymentState.FAILED, ms=1),
    RollbackProgress(rollback_id="rb", snapshot_id="s", stage="half", percentage=5),
    RollbackCancelled(rollback_id="rb", status="cancelled", closed_by="x", reason="r"),
    CanaryAborted(reason="r", snapshot_id="s"),
    CanaryStarted(canary="sec@2", percentage=10, criterion="user_id", snapshot_id="s"),
    CanaryPromoted(stable="sec@2", snapshot_id="s"),
    SplitChanged(from_percentage=10, to_percentage=25),
    ConfigChanged(changes={"alpha": 0.01}),
    SnapshotCreated(snapshot_id="s", kind=SnapshotKind.MANUAL, pinned=False),
    DeploymentCreated(stable="sec@1"),
]


def test_every_event_type_of_a_deployment_is_covered_here() -> None:
    union = get_args(get_args(Event)[0])
    every = {member.model_fields["type"].default for member in union}
    assert {event.type for event in EVERY_EVENT} == every - {"io.canaryguard.policy.published"}
    assert set(POSSIBLE_LEVELS) == every - {"io.canaryguard.policy.published"}


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: f"{e.type}")
def test_each_event_has_its_own_sentence_at_a_level_the_table_allows(event: Event) -> None:
    made = alert(event)
    assert made.level in POSSIBLE_LEVELS[event.type]
    assert made.message != f"checkout: {type(event).__name__}"  # not the fallback


def test_a_channel_for_policy_events_only_could_never_fire() -> None:
    assert not can_fire(AlertLevel.INFO, ("io.canaryguard.policy.*",))
    assert not can_fire(AlertLevel.EMERGENCY, ("io.canaryguard.canary.*",))
    assert can_fire(AlertLevel.CRITICAL, ("io.canaryguard.rollback.completed",))
