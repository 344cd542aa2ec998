"""The notification dispatcher: which alerts each channel gets, from where in the event log, and
what a failing channel does (and does not) hold up. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from canaryguard.adapters.clock import ManualClock
from canaryguard.domain.alerts import ChannelRule
from canaryguard.domain.errors import DeliveryFailed
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import AlertLevel, RollbackAlert
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.notifications import (
    MAX_RETRY_AFTER,
    Channel,
    Notifications,
    RetryPolicy,
    backoff_seconds,
)
from tests.helpers import ACTOR, seed
from tests.test_monitor import start as start_monitored
from tests.test_monitor import traffic
from tests.test_rollback import NAME, start

QUICK = RetryPolicy(attempts=3, first_wait=0.001, max_wait=0.002)


@dataclass
class Recorder:
    """A channel that keeps what it is sent; ``failures`` are raised first, one per attempt."""

    name: str = "ops"
    kind: str = "recorder"
    failures: list[DeliveryFailed] = field(default_factory=list)
    sent: list[tuple[RollbackAlert, EventRecord]] = field(default_factory=list)
    attempts: int = 0
    gate: asyncio.Event | None = None  # when set, every send waits for it
    on_attempt: Callable[[], None] | None = None  # called at each attempt, before the outcome
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each delivery
    closed: bool = False

    async def send(self, alert: RollbackAlert, record: EventRecord) -> None:
        self.attempts += 1
        if self.on_attempt is not None:
            self.on_attempt()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((alert, record))
        self.arrived.set()

    async def close(self) -> None:
        self.closed = True

    @property
    def types(self) -> list[str]:
        return [record.type for _, record in self.sent]


def dispatcher(
    app: CanaryGuard, *channels: tuple[Recorder, ChannelRule]
) -> tuple[Notifications, list[Channel]]:
    made = [Channel(notifier, rule) for notifier, rule in channels]
    return Notifications(app.ports, made, retry=QUICK), made


async def started(app: CanaryGuard, *channels: tuple[Recorder, ChannelRule]) -> Notifications:
    """A dispatcher whose channels have been seen once (their cursors at the log's end)."""
    notifications, made = dispatcher(app, *channels)
    for channel in made:
        await notifications.deliver_pending(channel)
    return notifications


async def deliver_all(notifications: Notifications) -> None:
    for channel in notifications.channels:
        await notifications.deliver_pending(channel)


async def test_a_new_channel_starts_at_the_end_of_the_log(app: CanaryGuard) -> None:
    await start(app)
    await app.rollbacks.rollback(NAME, reason="bad", actor=ACTOR)
    recorder = Recorder()
    notifications, (channel,) = dispatcher(app, (recorder, ChannelRule(AlertLevel.INFO)))
    assert await notifications.deliver_pending(channel) == 0
    assert await notifications.deliver_pending(channel) == 0
    assert recorder.sent == []


async def test_a_manual_rollback_reaches_a_channel_at_warning_without_the_info_events(
    app: CanaryGuard,
) -> None:
    await start(app)
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="errors up", actor="alice")
    await deliver_all(notifications)
    assert recorder.types == ["io.canaryguard.rollback.manual_initiated"]
    alert = recorder.sent[0][0]
    assert (alert.level, alert.deployment_id) == (AlertLevel.WARNING, NAME)
    assert "alice" in alert.message
    assert "errors up" in alert.message


async def test_a_channel_at_info_gets_every_deployment_event_in_order(app: CanaryGuard) -> None:
    await seed(app)
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.INFO)))
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    seqs = [record.seq for _, record in recorder.sent]
    assert seqs == sorted(seqs)
    assert "io.canaryguard.canary.started" in recorder.types
    assert recorder.types[-1] == "io.canaryguard.rollback.completed"


async def test_policy_events_raise_no_alert(app: CanaryGuard) -> None:
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.INFO)))
    await app.policies.publish("sec", {"a": 1}, actor=ACTOR)
    await deliver_all(notifications)
    assert recorder.sent == []


async def test_a_channel_gets_only_the_deployments_and_event_types_it_names(
    app: CanaryGuard,
) -> None:
    await seed(app)
    await seed_other(app)
    recorder = Recorder()
    rule = ChannelRule(
        AlertLevel.INFO, deployments=("shop/*",), events=("io.canaryguard.rollback.*",)
    )
    notifications = await started(app, (recorder, rule))
    for name in (NAME, "other"):
        await app.deployments.start_canary(name, policy="sec@2", percent=10, actor=ACTOR)
        await app.rollbacks.rollback(name, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    assert {alert.deployment_id for alert, _ in recorder.sent} == {NAME}
    assert all(t.startswith("io.canaryguard.rollback.") for t in recorder.types)
    assert recorder.types


async def seed_other(app: CanaryGuard) -> None:
    await app.deployments.create("other", stable="sec@1", actor=ACTOR)


async def test_the_cursor_is_kept_so_a_restart_sends_nothing_twice(app: CanaryGuard) -> None:
    await start(app)
    first = Recorder()
    notifications = await started(app, (first, ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    assert len(first.sent) == 1
    again = Recorder()
    restarted, (channel,) = dispatcher(app, (again, ChannelRule(AlertLevel.WARNING)))
    assert await restarted.deliver_pending(channel) == 0
    assert again.sent == []


async def test_events_committed_while_stopped_are_sent_after_a_restart(app: CanaryGuard) -> None:
    await start(app)
    await started(app, (Recorder(), ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="while down", actor=ACTOR)
    recorder = Recorder()
    restarted, (channel,) = dispatcher(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    assert await restarted.deliver_pending(channel) == 1
    assert "while down" in recorder.sent[0][0].message


async def test_a_delivery_that_fails_for_a_while_is_retried_and_sent_once(
    app: CanaryGuard,
) -> None:
    await start(app)
    recorder = Recorder(failures=[DeliveryFailed("503"), DeliveryFailed("timeout")])
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    status = notifications.status["ops"]
    assert (len(recorder.sent), recorder.attempts, status.sent, status.retried) == (1, 3, 1, 2)


async def test_a_permanent_refusal_is_not_retried_and_the_channel_moves_on(
    app: CanaryGuard,
) -> None:
    await start(app)
    recorder = Recorder(failures=[DeliveryFailed("400 bad request", permanent=True)])
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.INFO)))
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    status = notifications.status["ops"]
    assert (status.failed, status.retried) == (1, 0)
    assert status.last_error == "400 bad request"
    assert recorder.sent  # the events after the refused one still went
    assert recorder.attempts == len(recorder.sent) + 1


async def test_a_channel_that_keeps_failing_gives_up_after_its_attempts(
    app: CanaryGuard,
) -> None:
    await start(app)
    recorder = Recorder(failures=[DeliveryFailed("down")] * 3)
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    await deliver_all(notifications)
    status = notifications.status["ops"]
    assert (recorder.attempts, status.failed, status.sent, status.last_error) == (3, 1, 0, "down")
    assert status.last_error_at is not None
    assert await notifications.deliver_pending(notifications.channels[0]) == 0  # not again


async def test_a_replica_without_the_controller_lease_sends_nothing(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await start(app)
    assert await app.lead().hold()
    follower = Recorder()
    notifications, (channel,) = dispatcher(
        other_replica, (follower, ChannelRule(AlertLevel.WARNING))
    )
    notifications.leadership = other_replica.lead()
    await other_replica.lead().hold()
    assert await notifications.deliver_pending(channel) == 0
    async with app.ports.store.read() as tx:
        assert await tx.notifications.get("ops") is None  # the leader's to set


async def test_a_blocked_channel_does_not_hold_up_another(app: CanaryGuard) -> None:
    await start(app)
    blocked = Recorder(name="slow", gate=asyncio.Event())
    fast = Recorder(name="fast")
    rule = ChannelRule(AlertLevel.WARNING)
    notifications = await started(app, (blocked, rule), (fast, rule))
    notifications.poll_seconds = 0.01
    runner = asyncio.create_task(notifications.run())
    try:
        await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
        async with asyncio.timeout(10):
            await fast.arrived.wait()
        assert blocked.sent == []  # still waiting on its receiver
        assert blocked.gate is not None
        blocked.gate.set()
        async with asyncio.timeout(10):
            await blocked.arrived.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_published_event_wakes_the_channels_without_waiting_for_the_poll(
    app: CanaryGuard,
) -> None:
    await start(app)
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    notifications.poll_seconds = 3600  # only a wake-up can deliver within the test's timeout
    runner = asyncio.create_task(notifications.run())
    try:
        await asyncio.sleep(0.05)  # the workers have read the log and wait
        await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
        async with asyncio.timeout(10):
            await recorder.arrived.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_cursor_never_moves_back(app: CanaryGuard) -> None:
    now = app.ports.clock.now()
    async with app.ports.store.write() as tx:
        await tx.notifications.advance("ops", 5, at=now)
        await tx.notifications.advance("ops", 3, at=now)
    async with app.ports.store.read() as tx:
        assert await tx.notifications.get("ops") == 5


async def test_closing_the_dispatcher_closes_its_channels(app: CanaryGuard) -> None:
    recorder = Recorder()
    notifications, _ = dispatcher(app, (recorder, ChannelRule()))
    await notifications.close()
    assert recorder.closed


async def test_an_automatic_rollback_alerts_a_critical_channel_with_its_reason_and_metrics(
    app: CanaryGuard,
) -> None:
    revision = await start_monitored(app)
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.CRITICAL)))
    [decision] = await traffic(app, 30, revision=revision, canary_errors=3)
    await deliver_all(notifications)
    assert recorder.types == ["io.canaryguard.rollback.auto_triggered"]
    alert = recorder.sent[0][0]
    assert alert.level is AlertLevel.CRITICAL
    assert decision.reason in alert.message
    assert "canary errors 3.00% vs stable 1.00%" in alert.message
    assert alert.metrics is not None
    assert alert.metrics.canary.errors > 0


PATIENT = RetryPolicy(first_wait=0.001, max_wait=0.002)  # no attempt limit: until max age


async def test_a_receiver_down_for_a_while_gets_the_alert_and_the_later_ones_in_order(
    app: CanaryGuard,
) -> None:
    await start(app)
    await seed_other(app)
    recorder = Recorder(failures=[DeliveryFailed("503")] * 12)
    notifications, (channel,) = dispatcher(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    notifications.retry = PATIENT
    await notifications.deliver_pending(channel)
    await app.rollbacks.rollback(NAME, reason="first", actor=ACTOR)
    await app.deployments.start_canary("other", policy="sec@2", percent=10, actor=ACTOR)
    await app.rollbacks.rollback("other", reason="second", actor=ACTOR)
    assert await notifications.deliver_pending(channel) == 2
    assert [alert.deployment_id for alert, _ in recorder.sent] == [NAME, "other"]
    status = notifications.status["ops"]
    assert (status.failed, status.retried, status.retrying) == (0, 12, None)
    assert status.last_error == "503"  # the outage stays on record


async def test_an_alert_older_than_its_max_age_is_given_up_without_a_try(
    app: CanaryGuard, clock: ManualClock
) -> None:
    await start(app)
    recorder = Recorder()
    notifications = await started(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    clock.advance(notifications.retry.max_age_seconds + 1)
    await deliver_all(notifications)
    status = notifications.status["ops"]
    assert (recorder.attempts, status.failed) == (0, 1)
    assert status.last_error is not None
    assert "older than" in status.last_error


async def test_a_replica_that_loses_the_lease_while_retrying_stops_and_keeps_the_cursor(
    app: CanaryGuard, clock: ManualClock
) -> None:
    await start(app)
    leadership = app.lead()
    assert await leadership.hold()
    recorder = Recorder(
        failures=[DeliveryFailed("503")] * 50,
        on_attempt=lambda: clock.advance(leadership.ttl.total_seconds()),  # the lease lapses
    )
    notifications, (channel,) = dispatcher(app, (recorder, ChannelRule(AlertLevel.WARNING)))
    notifications.retry = PATIENT
    notifications.leadership = leadership
    await notifications.deliver_pending(channel)  # seen: cursor at the log's end
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    before = (await notifications.cursors())["ops"]
    assert await leadership.hold()
    assert await notifications.deliver_pending(channel) == 0
    status = notifications.status["ops"]
    assert (recorder.attempts, status.failed, status.sent) == (1, 0, 0)
    assert (await notifications.cursors())["ops"] == before  # the next leader sends it


def test_the_wait_doubles_up_to_its_ceiling() -> None:
    policy = RetryPolicy(first_wait=1, max_wait=60)
    waits = [backoff_seconds(policy, n, DeliveryFailed("503")) for n in (1, 2, 3, 7, 8)]
    assert waits == [1, 2, 4, 60, 60]


def test_the_wait_is_at_least_what_the_receiver_asked_for() -> None:
    policy = RetryPolicy(first_wait=1, max_wait=60)
    assert backoff_seconds(policy, 1, DeliveryFailed("429", retry_after=120)) == 120
    assert backoff_seconds(policy, 1, DeliveryFailed("429", retry_after=86_400)) == MAX_RETRY_AFTER
