"""The application object: every engine service over one set of ports."""

from __future__ import annotations

from datetime import timedelta

from canaryguard.domain.models import RollbackRecord
from canaryguard.engine.audit import AuditService
from canaryguard.engine.deployments import DeploymentService
from canaryguard.engine.events import EventFeed
from canaryguard.engine.executor import EXECUTOR_ACTOR, RollbackExecutor
from canaryguard.engine.leadership import TTL, Leadership
from canaryguard.engine.monitor import MONITOR_ACTOR, Monitor
from canaryguard.engine.notifications import Notifications
from canaryguard.engine.observations import ObservationService
from canaryguard.engine.policies import PolicyService
from canaryguard.engine.pulling import MetricsPuller
from canaryguard.engine.rollback import RollbackManager
from canaryguard.engine.snapshots import SnapshotService
from canaryguard.engine.tokens import TokenService
from canaryguard.engine.unit import Ports, unit_of_work

__all__ = ["CanaryGuard"]

PEER_SETTLE_SECONDS = 2


class CanaryGuard:
    """canaryguard as a library: policies, deployments, snapshots, rollbacks, events, audit.

    Build one with :func:`canaryguard.open_canaryguard` (or ``CanaryGuard(ports)`` with your
    own adapters) and ``await close()`` it when done.
    """

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.policies = PolicyService(ports)
        self.snapshots = SnapshotService(ports)
        self.deployments = DeploymentService(ports, self.snapshots)
        self.rollbacks = RollbackManager(ports, self.snapshots)
        self.executor = RollbackExecutor(ports, self.rollbacks)
        self.rollbacks.staged = self._start_confirmed_staged
        self.audit = AuditService(ports)
        self.events = EventFeed(ports)
        self.observations = ObservationService(ports)
        self.monitor = Monitor(
            ports, self.rollbacks, executor=self.executor, extensions=ports.extensions
        )
        self.tokens = TokenService(ports)
        # alerts to webhooks, Slack, email (``serve --notifications FILE``)
        self.notifications = Notifications(ports, ports.channels)
        # outcomes read from Prometheus (``serve --prometheus URL``) besides clients' reports
        self.puller = (
            MetricsPuller(ports, ports.metrics_source) if ports.metrics_source is not None else None
        )
        if self.puller is not None:
            self.monitor.complete_second = self.puller.complete_second
        self.leadership: Leadership | None = None
        # another replica's share of a second reaches this one within its flush and the next
        # follow (a second each): judge seconds that much later while others take reports
        self.monitor.extra_settle = lambda: (
            PEER_SETTLE_SECONDS if self.observations.peers_active else 0
        )
        self.notices: list[str] = []

    async def _start_confirmed_staged(self, pending: RollbackRecord, actor: str) -> RollbackRecord:
        return await self.executor.start(
            pending.deployment,
            reason=pending.reason,
            actor=actor,
            to=pending.target_snapshot_id,
            pending=pending,
        )

    async def rotate_keys(self, *, actor: str) -> tuple[str, int, tuple[str, ...]]:
        """Make a new primary key (with a key file) and re-encrypt every snapshot with it.

        With keys from ``CANARYGUARD_KEYS`` no key can be made here: the operator adds the new
        key at the end of the variable and restarts, and this re-encrypts under it. Returns the
        primary key id, how many snapshots were re-encrypted, and those that do not open.
        """
        keys = self.ports.keys
        key_id = keys.rotate() if keys.can_rotate else keys.primary_key_id
        async with unit_of_work(self.ports, actor) as unit:
            await unit.audit("keys.rotate", details={"key_id": key_id, "new_key": keys.can_rotate})
        count, skipped = await self.snapshots.reencrypt(actor=actor)
        return key_id, count, skipped

    def lead(self, *, ttl: timedelta = TTL) -> Leadership:
        """Run the monitor and the executor only while this process holds the controller lease
        (what ``serve`` does, so several replicas can share one database: invariant 5)."""
        if self.leadership is None:
            self.leadership = Leadership(
                self.ports, fenced_actors=frozenset({MONITOR_ACTOR, EXECUTOR_ACTOR}), ttl=ttl
            )
            self.monitor.leadership = self.executor.leadership = self.leadership
            self.notifications.leadership = self.leadership
            self.ports.fences.append(self.leadership.fence)
        return self.leadership

    async def close(self) -> None:
        """Flush observations not yet written, hand the controller lease over, and close the
        store."""
        try:
            await self.observations.flush()
            if self.leadership is not None:
                await self.leadership.release()
        finally:
            await self.notifications.close()
            try:
                if self.ports.metrics_source is not None:
                    await self.ports.metrics_source.close()
            finally:
                await self.ports.store.close()
