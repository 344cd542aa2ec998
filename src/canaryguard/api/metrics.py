"""Prometheus text at ``/metrics``, on a registry the app is given (never the global one).

Counts come from the store at scrape time, so they are right across restarts and replicas; the
duration histogram is observed in this process from the rollback events it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from canaryguard.domain.events import RollbackCompleted
from canaryguard.domain.models import Deployment, DeploymentState, RollbackKind, RollbackStatus
from canaryguard.engine.app import CanaryGuard

__all__ = ["MetricsExporter"]

DURATION_BUCKETS = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    120_000,
)


class _StoreCollector(Collector):
    """Reports the figures the last refresh read from the store."""

    def __init__(self) -> None:
        self.deployments: list[Deployment] = []
        self.counts: dict[tuple[RollbackKind, RollbackStatus], int] = {}
        self.by_deployment: dict[tuple[str, RollbackKind, RollbackStatus], int] = {}
        self.evidence: list[tuple[str, str, float]] = []  # deployment, test, e-value
        self.last_rollback: float | None = None
        self.bus_dropped = 0
        self.leader: float | None = None  # None: this process takes no part in the election

    def collect(self):  # type: ignore[no-untyped-def]  # the Collector protocol is untyped
        rollbacks = CounterMetricFamily(
            "canaryguard_rollbacks", "Rollbacks by kind and outcome", labels=["kind", "outcome"]
        )
        for kind in RollbackKind:
            for status in (RollbackStatus.COMPLETED, RollbackStatus.FAILED):
                rollbacks.add_metric([kind.value, status.value], self.counts.get((kind, status), 0))
        yield rollbacks
        per_deployment = CounterMetricFamily(
            "canaryguard_deployment_rollbacks",
            "Finished rollbacks of each deployment by kind and final status",
            labels=["deployment", "kind", "status"],
        )
        for (name, kind, status), count in sorted(self.by_deployment.items()):
            if not status.is_open:  # a counter only grows: open ones are not counted yet
                per_deployment.add_metric([name, kind.value, status.value], count)
        yield per_deployment
        evidence = GaugeMetricFamily(
            "canaryguard_detector_e_value",
            "Evidence of each sequential test against each judged canary (rolls back at its "
            "threshold)",
            labels=["deployment", "test"],
        )
        for name, test, value in self.evidence:
            evidence.add_metric([name, test], value)
        yield evidence
        last = GaugeMetricFamily(
            "canaryguard_last_rollback_timestamp_seconds", "When the last rollback finished"
        )
        if self.last_rollback is not None:
            last.add_metric([], self.last_rollback)
        yield last
        percent = GaugeMetricFamily(
            "canaryguard_canary_percent", "Canary share of traffic, percent", labels=["deployment"]
        )
        state = GaugeMetricFamily(
            "canaryguard_deployment_state",
            "1 for the state each deployment is in",
            labels=["deployment", "state"],
        )
        revision = GaugeMetricFamily(
            "canaryguard_deployment_revision", "Revision", labels=["deployment"]
        )
        for deployment in self.deployments:
            percent.add_metric([deployment.name], deployment.split.canary_percent)
            revision.add_metric([deployment.name], deployment.revision)
            for candidate in DeploymentState:
                state.add_metric(
                    [deployment.name, candidate.value], float(candidate is deployment.state)
                )
        yield percent
        yield state
        yield revision
        dropped = CounterMetricFamily(
            "canaryguard_event_bus_dropped",
            "Events a slow subscriber missed (it catches up from the log)",
        )
        dropped.add_metric([], self.bus_dropped)
        yield dropped
        if self.leader is not None:
            leader = GaugeMetricFamily(
                "canaryguard_controller_leader",
                "1 when this process holds the controller lease (runs the monitor and executor)",
            )
            leader.add_metric([], self.leader)
            yield leader


class _NotificationCollector(Collector):
    """Each notification channel's deliveries by this process (the leader sends them all)."""

    def __init__(self, guard: CanaryGuard) -> None:
        self._guard = guard  # read at each scrape (None while the API reference is generated)

    def collect(self):  # type: ignore[no-untyped-def]  # the Collector protocol is untyped
        families = {
            "sent": CounterMetricFamily(
                "canaryguard_notifications_sent",
                "Alerts that reached each notification channel",
                labels=["channel"],
            ),
            "failed": CounterMetricFamily(
                "canaryguard_notifications_failed",
                "Alerts given up on, per channel (refused, or every attempt failed)",
                labels=["channel"],
            ),
            "retried": CounterMetricFamily(
                "canaryguard_notifications_retried",
                "Delivery attempts after a first that failed, per channel",
                labels=["channel"],
            ),
        }
        for status in self._guard.notifications.status.values():
            for field, family in families.items():
                family.add_metric([status.name], getattr(status, field))
        yield from families.values()


class MetricsExporter:
    def __init__(self, guard: CanaryGuard, registry: CollectorRegistry) -> None:
        self._guard = guard
        self.registry = registry
        self._store = _StoreCollector()
        registry.register(self._store)
        registry.register(_NotificationCollector(guard))
        self._duration = Histogram(
            "canaryguard_rollback_duration_milliseconds",
            "Duration of completed rollbacks (decision to commit) run by this process",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._subscribers = Gauge(
            "canaryguard_event_subscribers",
            "Live event subscribers in this process",
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the current figures from the store (called before each scrape)."""
        guard = self._guard
        self._store.deployments = await guard.deployments.list()
        self._store.counts = await guard.rollbacks.counts()
        self._store.by_deployment = await guard.rollbacks.counts_by_deployment()
        self._store.evidence = [
            (name, test.name, test.e_value)
            for name, watch in guard.monitor.watches().items()
            for test in watch.judge.detector.tests
        ]
        last = (await guard.rollbacks.metrics()).last_rollback_time
        self._store.last_rollback = last.timestamp() if last is not None else None
        bus = guard.ports.bus
        self._store.bus_dropped = bus.dropped_total
        leadership = guard.leadership
        self._store.leader = None if leadership is None else float(leadership.is_leader)
        self._subscribers.set(bus.subscriber_count)

    def start(self) -> None:
        self._task = asyncio.create_task(self._observe_durations())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _observe_durations(self) -> None:
        # this process's rollbacks only: each replica counts what it did
        subscription = self._guard.ports.bus.subscribe(maxsize=4096, relayed=False)
        try:
            while True:
                event = (await subscription.get()).event
                if isinstance(event, RollbackCompleted):
                    self._duration.observe(event.duration_ms)
        finally:
            subscription.close()
