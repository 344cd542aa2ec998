"""What each event says as an alert (level, sentence, figures), and which channels want it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canaryguard.domain.alerts import ChannelRule, alert_for
from canaryguard.domain.events import (
    AutoRollbackTriggered,
    CanaryAborted,
    CanaryStarted,
    Event,
    EventRecord,
    ManualRollbackInitiated,
    PolicyPublished,
    RollbackCancelled,
    RollbackCompleted,
    RollbackFailed,
    RollbackProgress,
    SplitChanged,
)
from canaryguard.domain.models import (
    AlertLevel,
    DeploymentState,
    MetricsSnapshot,
    RollbackAlert,
)

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REASON = "canary errors 2.1 % vs stable 1.0 %, e-value 143 >= 100, over 4,120 canary requests"


def record(event: Event, deployment: str | None = "checkout") -> EventRecord:
    return EventRecord(seq=7, deployment=deployment, time=AT, revision=3, event=event)


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
    made = alert(
        RollbackCompleted(
            rollback_id="rb1",
            snapshot_id="s1",
            duration_ms=1530,
            success=True,
            final_state=DeploymentState.ROLLED_BACK,
        )
    )
    assert made.level is AlertLevel.INFO
    assert "completed in 1.5 s" in made.message


def test_a_rollback_that_completes_without_success_is_critical() -> None:
    made = alert(
        RollbackCompleted(
            rollback_id="rb1",
            snapshot_id="s1",
            duration_ms=10,
            success=False,
            final_state=DeploymentState.FAILED,
        )
    )
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
