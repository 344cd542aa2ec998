"""Notifications: every committed event, as an alert, to each channel that wants it.

The dispatcher reads the stored event log, never the rollback's own code path, so a slow or
dead receiver cannot delay a rollback (it only delays its own channel). Each channel has its own
worker and its own cursor in the store: the sequence number of the last event it has dealt with.
A restart, or another replica taking the controller lease, carries on from there, so an alert
is neither lost nor (except for one whose delivery was cut off mid-way) sent twice. Only the
replica that holds the controller lease sends.

A delivery that fails for a reason that may pass (a timeout, a 5xx, 429) is retried with
exponential backoff (honouring ``Retry-After``), and the channel waits on it: later alerts go
out after it, in order, once the receiver is back. An alert is given up on only when the
receiver refuses it for good (a 4xx), or when it is older than ``RetryPolicy.max_age_seconds``
(stale: an outage that long makes it news no more); it is then counted, logged and shown in the
channel's status, and the channel moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from canaryguard.domain.alerts import alert_for
from canaryguard.domain.errors import DeliveryFailed
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import RollbackAlert
from canaryguard.engine.leadership import Leadership
from canaryguard.engine.ports import Channel, Subscription
from canaryguard.engine.unit import Ports, logged_after

__all__ = ["Channel", "ChannelStatus", "Notifications", "RetryPolicy", "backoff_seconds"]

log = logging.getLogger("canaryguard.notifications")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one alert: waiting ``first_wait`` seconds after the first
    failure, doubling up to ``max_wait`` (or what a ``Retry-After`` asks, up to
    ``MAX_RETRY_AFTER``), until the alert's event is ``max_age_seconds`` old; ``attempts``, when
    set, also ends it after that many tries."""

    first_wait: float = 1.0
    max_wait: float = 60.0
    max_age_seconds: float = 3600.0
    attempts: int | None = None


MAX_RETRY_AFTER = 600.0  # seconds: a receiver asking for longer is retried after this anyway


def backoff_seconds(
    policy: RetryPolicy, failed_attempts: int, error: BaseException | None
) -> float:
    """How long to wait after ``failed_attempts`` tries: doubling from ``first_wait`` up to
    ``max_wait``, or longer when the receiver's ``Retry-After`` asked so (up to
    ``MAX_RETRY_AFTER``)."""
    backoff: float = min(policy.first_wait * 2.0 ** (failed_attempts - 1), policy.max_wait)
    asked = error.retry_after if isinstance(error, DeliveryFailed) else None
    return max(backoff, min(asked or 0.0, MAX_RETRY_AFTER))


@dataclass
class ChannelStatus:
    """What a channel has done since this process started, and where its cursor is."""

    name: str
    cursor: int | None = None
    sent: int = 0
    failed: int = 0
    retried: int = 0
    retrying: int | None = None  # the event being retried now, if any
    last_sent_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


def _retryable(error: BaseException) -> bool:
    return isinstance(error, DeliveryFailed) and not error.permanent


def _describe(error: BaseException | None) -> str:
    if error is None or isinstance(error, DeliveryFailed):
        return str(error)
    return f"{type(error).__name__}: {error}"  # a notifier's bug, not the receiver's answer


class _Outcome(enum.Enum):
    SENT = "sent"
    GAVE_UP = "gave up"
    STOPPED = "stopped"  # this replica lost the lease while trying


class Notifications:
    """The notification dispatcher: one worker per channel, woken by every published event."""

    def __init__(
        self,
        ports: Ports,
        channels: Sequence[Channel],
        *,
        retry: RetryPolicy | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        names = [channel.name for channel in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"notification channel names must be unique: {names}")
        self._ports = ports
        self.channels = tuple(channels)
        self.retry = retry or RetryPolicy()
        self.poll_seconds = poll_seconds
        self.leadership: Leadership | None = None  # set by ``CanaryGuard.lead``
        self.status = {c.name: ChannelStatus(c.name) for c in self.channels}
        self._wake = {c.name: asyncio.Event() for c in self.channels}

    @property
    def sending(self) -> bool:
        """Whether this replica sends: it holds the controller lease (or takes no part in the
        election)."""
        return self.leadership is None or self.leadership.is_leader

    async def cursors(self) -> dict[str, int]:
        """Each channel's cursor as stored (channels not seen yet are left out)."""
        found: dict[str, int] = {}
        async with self._ports.store.read() as tx:
            for channel in self.channels:
                cursor = await tx.notifications.get(channel.name)
                if cursor is not None:
                    found[channel.name] = cursor
        return found

    async def run(self) -> None:
        """Deliver until cancelled (``serve`` runs this next to the monitor)."""
        if not self.channels:
            return
        subscription = self._ports.bus.subscribe(maxsize=64)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(subscription))
                for channel in self.channels:
                    group.create_task(self._work(channel))
        finally:
            subscription.close()

    async def _pump(self, subscription: Subscription) -> None:
        # any published event (here or relayed from another replica) wakes every channel;
        # overflow only drops wake-ups, and the workers read the log, never the queue
        while True:
            await subscription.get()
            for wake in self._wake.values():
                wake.set()

    async def _work(self, channel: Channel) -> None:
        name = channel.name
        wake = self._wake[name]
        while True:
            try:
                await self.deliver_pending(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the store did not answer, most likely: try again at the next wake-up
                log.exception(
                    "notification channel %s: cannot read or move its cursor", channel.name
                )
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up does, and shutdown would then wait on this loop for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await wake.wait()
            wake.clear()

    async def deliver_pending(self, channel: Channel) -> int:
        """Deal with every event after the channel's cursor (if this replica leads); how many
        alerts reached the channel. A channel seen for the first time starts at the log's end:
        it gets what happens from now on, not the whole history."""
        if not self.sending:
            return 0
        status = self.status[channel.name]
        if status.cursor is not None and status.cursor >= self._ports.bus.last_seq:
            # nothing committed since (the bus carries this process's events and relays the
            # others'): the 1 s poll of an idle channel reads nothing
            return 0
        async with self._ports.store.read() as tx:
            cursor = await tx.notifications.get(channel.name)
            end = await tx.events.last_seq() if cursor is None else 0
        if cursor is None:
            await self._advance(channel, end)
            return 0
        status.cursor = cursor
        delivered = 0
        async for page in logged_after(self._ports, cursor):
            for record in page:
                if not self.sending:
                    return delivered
                alert = alert_for(record)
                if alert is not None and channel.rule.wants(alert, record):
                    outcome = await self._deliver(channel, alert, record)
                    if outcome is _Outcome.STOPPED:
                        return delivered  # the lease went: the leader carries on from here
                    delivered += outcome is _Outcome.SENT
                    await self._advance(channel, record.seq)
            await self._advance(channel, page[-1].seq)
        return delivered

    def _age(self, record: EventRecord) -> float:
        return (self._ports.clock.now() - record.time).total_seconds()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return backoff_seconds(self.retry, state.attempt_number, error)

    async def _deliver(
        self, channel: Channel, alert: RollbackAlert, record: EventRecord
    ) -> _Outcome:
        status = self.status[channel.name]
        if self._age(record) > self.retry.max_age_seconds:
            self._gave_up(channel, record, f"not sent: older than {self.retry.max_age_seconds:g} s")
            return _Outcome.GAVE_UP

        def stop(state: RetryCallState) -> bool:
            attempts = self.retry.attempts
            return (
                not self.sending
                or self._age(record) > self.retry.max_age_seconds
                or (attempts is not None and state.attempt_number >= attempts)
            )

        def failed_attempt(state: RetryCallState) -> None:
            # shown while the channel waits on this alert, so an outage is visible at once
            error = state.outcome.exception() if state.outcome is not None else None
            status.retrying = record.seq
            status.last_error = _describe(error)
            status.last_error_at = self._ports.clock.now()
            if state.attempt_number == 1:
                log.warning(
                    "notification channel %s: event %d (%s) not delivered, retrying: %s",
                    channel.name,
                    record.seq,
                    record.type,
                    status.last_error,
                )

        retrying = AsyncRetrying(
            stop=stop,
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=failed_attempt,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        status.retried += 1
                    await channel.notifier.send(alert, record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.sending:
                return _Outcome.STOPPED
            self._gave_up(channel, record, _describe(exc), error=exc)
            return _Outcome.GAVE_UP
        finally:
            if status.retrying == record.seq:
                status.retrying = None
        status.sent += 1
        status.last_sent_at = self._ports.clock.now()
        return _Outcome.SENT

    def _gave_up(
        self, channel: Channel, record: EventRecord, why: str, *, error: Exception | None = None
    ) -> None:
        status = self.status[channel.name]
        status.failed += 1
        status.last_error = why
        status.last_error_at = self._ports.clock.now()
        log.warning(
            "notification channel %s gave up on event %d (%s): %s",
            channel.name,
            record.seq,
            record.type,
            why,
            exc_info=error is not None and not isinstance(error, DeliveryFailed),
        )

    async def _advance(self, channel: Channel, seq: int) -> None:
        status = self.status[channel.name]
        if status.cursor is not None and seq <= status.cursor:
            return
        async with self._ports.store.write(exclusive=False) as tx:
            await tx.notifications.advance(channel.name, seq, at=self._ports.clock.now())
        status.cursor = seq

    async def close(self) -> None:
        """Close every channel's connections."""
        for channel in self.channels:
            try:
                await channel.notifier.close()
            except Exception:
                log.exception("notification channel %s did not close cleanly", channel.name)
