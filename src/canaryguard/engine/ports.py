"""Ports: what the engine needs from the outside world, as ``typing.Protocol``s.

The composition root (``canaryguard.wiring``) fills them with adapters; tests may fill them with
their own. The engine never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from canaryguard.domain.access import ApiToken
from canaryguard.domain.alerts import ChannelRule
from canaryguard.domain.assignment import Variant
from canaryguard.domain.audit import AuditEntry
from canaryguard.domain.events import Event, EventRecord
from canaryguard.domain.judge import RunCheckpoint
from canaryguard.domain.models import (
    AuditRecord,
    Deployment,
    DeploymentState,
    PolicyVersion,
    PrometheusSelectors,
    RollbackAlert,
    RollbackKind,
    RollbackMetrics,
    RollbackRecord,
    RollbackStatus,
    SnapshotInfo,
)
from canaryguard.domain.windows import RollupKey, SecondStats

__all__ = [
    "AuditLog",
    "Channel",
    "CheckpointRepo",
    "Clock",
    "DeploymentRepo",
    "EventBus",
    "EventLog",
    "KeyRing",
    "LeaseRepo",
    "MetricsSource",
    "NotificationCursorRepo",
    "Notifier",
    "ObservationRepo",
    "PolicyRepo",
    "RollbackRepo",
    "SealedSnapshot",
    "SnapshotRepo",
    "Store",
    "Subscription",
    "TokenRepo",
    "Transaction",
]


class Clock(Protocol):
    """Time, injected so that tests and replays can run on simulated time."""

    def now(self) -> datetime:
        """The current UTC time (timezone-aware)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations."""
        ...


class KeyRing(Protocol):
    """Authenticated encryption with a key ring: new data under the primary key, old keys kept."""

    @property
    def primary_key_id(self) -> str: ...

    def encrypt(self, plaintext: bytes, *, associated_data: bytes) -> tuple[str, bytes]:
        """Encrypt under the primary key; returns (key id, sealed blob)."""
        ...

    def decrypt(self, key_id: str, blob: bytes, *, associated_data: bytes) -> bytes:
        """Open a sealed blob; raises ``IntegrityError`` for a tampered, foreign or unkeyed one."""
        ...

    @property
    def can_rotate(self) -> bool:
        """Whether :meth:`rotate` can make and keep a new key (a key file can, an env var not)."""
        ...

    def rotate(self) -> str:
        """Make a new primary key (old ones stay for decryption); returns its id."""
        ...


@dataclass(frozen=True)
class SealedSnapshot:
    """A snapshot as stored: the clear-text index and the encrypted body."""

    info: SnapshotInfo
    blob: bytes


class PolicyRepo(Protocol):
    async def get(self, name: str, version: str) -> PolicyVersion | None: ...
    async def find_by_hash(self, name: str, content_hash: str) -> PolicyVersion | None: ...
    async def latest(self, name: str) -> PolicyVersion | None: ...
    async def insert(self, version: PolicyVersion) -> None: ...
    async def versions(self, name: str) -> list[PolicyVersion]: ...
    async def names(self) -> list[str]: ...
    async def get_schema(self, name: str) -> dict[str, Any] | None: ...
    async def set_schema(
        self, name: str, schema: dict[str, Any], *, now: datetime, actor: str
    ) -> None: ...


class DeploymentRepo(Protocol):
    async def get(self, name: str) -> Deployment | None: ...
    async def insert(self, deployment: Deployment) -> None: ...

    async def update(self, deployment: Deployment, *, expected_revision: int) -> None:
        """Write ``deployment`` if the stored revision is still ``expected_revision``, else
        raise ``Conflict`` (invariant 4: no silent overwrite)."""
        ...

    async def all(self, states: Collection[DeploymentState] | None = None) -> list[Deployment]:
        """Every deployment, by name; with ``states``, only those in one of them (the monitor
        and the puller read theirs every second: decoding every idle deployment's row each
        time would cost more than judging the canaries)."""
        ...

    async def revisions(self) -> dict[str, int]:
        """Every deployment's current revision, by name, without decoding any of them."""
        ...

    async def many(self, names: Collection[str]) -> list[Deployment]:
        """The deployments of ``names`` that exist, by name."""
        ...

    async def existing(self, names: Collection[str]) -> set[str]:
        """Which of ``names`` are deployments."""
        ...


class SnapshotRepo(Protocol):
    async def insert(self, sealed: SealedSnapshot) -> None:
        """Store ``sealed`` with the sequence number its index names."""
        ...

    async def append(self, sealed: SealedSnapshot) -> SnapshotInfo:
        """Store ``sealed`` as the deployment's newest snapshot; returns its index with its seq."""
        ...

    async def prune(self, deployment: str, *, keep: int, protect: Collection[str]) -> list[str]:
        """Delete the oldest snapshots beyond ``keep`` (never pinned, protected, or named by an
        open rollback); returns the deleted ids."""
        ...

    async def get(self, snapshot_id: str) -> SealedSnapshot | None: ...
    async def of_deployment(self, deployment: str) -> list[SnapshotInfo]: ...
    async def delete(self, snapshot_ids: Sequence[str]) -> None: ...
    async def set_pinned(self, snapshot_id: str, *, pinned: bool) -> None: ...
    async def replace_blob(self, snapshot_id: str, *, key_id: str, blob: bytes) -> None: ...
    async def ids_not_under(self, key_id: str, *, limit: int) -> list[str]: ...
    async def count(self) -> int: ...


class RollbackRepo(Protocol):
    async def insert(self, record: RollbackRecord) -> None: ...
    async def update(self, record: RollbackRecord) -> None: ...
    async def get(self, rollback_id: str) -> RollbackRecord | None: ...
    async def find(
        self, *, deployment: str | None = None, limit: int = 100
    ) -> list[RollbackRecord]: ...
    async def open_for(self, deployment: str) -> list[RollbackRecord]: ...
    async def pending(self) -> list[RollbackRecord]: ...
    async def running_staged(self) -> list[RollbackRecord]: ...
    async def metrics(self, *, deployment: str | None = None) -> RollbackMetrics: ...
    async def counts(self) -> dict[tuple[RollbackKind, RollbackStatus], int]: ...
    async def counts_by_deployment(
        self,
    ) -> dict[tuple[str, RollbackKind, RollbackStatus], int]: ...


class EventLog(Protocol):
    async def append(
        self, event: Event, *, deployment: str | None, revision: int | None, time: datetime
    ) -> EventRecord: ...

    async def read(
        self, *, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[EventRecord]: ...

    async def last_seq(self) -> int:
        """The newest event's sequence number (0 for an empty log)."""
        ...


class AuditLog(Protocol):
    async def append(self, entry: AuditEntry) -> AuditRecord:
        """Chain ``entry`` after the current head and move the head; never updates a record."""
        ...

    async def read(
        self, *, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[AuditRecord]: ...

    async def head(self) -> tuple[int, str] | None: ...


class ObservationRepo(Protocol):
    """The per-second rollup in the database: append-only delta rows, summed when read."""

    async def append(
        self,
        rows: Sequence[tuple[RollupKey, SecondStats]],
        *,
        node: str,
        flush_seq: int,
        at: datetime,
    ) -> None:
        """Append one delta row per key, written by the replica ``node`` in its flush number
        ``flush_seq``, and record that flush as the replica's last."""
        ...

    async def nodes(self) -> dict[str, int]:
        """Every replica's last committed flush number."""
        ...

    async def flushed(
        self, node: str, *, after: int, upto: int
    ) -> list[tuple[RollupKey, SecondStats]]:
        """The rows replica ``node`` wrote in its flushes ``after < n <= upto``."""
        ...

    async def forget_nodes(self, *, before: datetime) -> None:
        """Forget replicas whose last flush is older than ``before``."""
        ...

    async def since(self, *, second: int) -> list[tuple[RollupKey, SecondStats]]:
        """Every delta row for seconds ``>= second`` (to fill the window store at start)."""
        ...

    async def seen_batch(self, batch_id: str) -> bool: ...

    async def remember_batches(self, batch_ids: Sequence[str], *, at: datetime) -> None:
        """Record merged batch ids (ids recorded before are left as they are)."""
        ...

    async def forget_batches(self, *, before: datetime) -> None: ...

    async def prune(self, *, before_second: int) -> int:
        """Drop rows for seconds older than ``before_second``; how many went."""
        ...


class TokenRepo(Protocol):
    async def by_digest(self, digest: str) -> ApiToken | None: ...
    async def get(self, name: str) -> ApiToken | None: ...
    async def insert(self, token: ApiToken) -> None: ...
    async def revoke(self, name: str, *, at: datetime) -> None: ...
    async def all(self) -> list[ApiToken]: ...
    async def count(self) -> int: ...


class LeaseRepo(Protocol):
    """Leases with a fencing token: at most one holder at a time, taken over once expired."""

    async def claim(self, name: str, *, holder: str, now: datetime, until: datetime) -> int | None:
        """Take or renew lease ``name`` for ``holder`` until ``until``; its epoch (the fencing
        token: renewing keeps it, a takeover of an expired lease raises it), or None when
        another holder's lease has not expired."""
        ...

    async def holder(self, name: str) -> tuple[str, int] | None:
        """The lease's holder and epoch, locked against a takeover until the transaction ends."""
        ...

    async def release(self, name: str, *, holder: str, at: datetime) -> None:
        """Let the lease expire at ``at`` if ``holder`` holds it (a clean stop hands over)."""
        ...


class CheckpointRepo(Protocol):
    """Each running canary's last saved detector (``RunCheckpoint``), by run."""

    async def get(self, run: str) -> RunCheckpoint | None:
        """The run's checkpoint, or None; ``CheckpointError`` when it cannot be read back."""
        ...

    async def save(self, checkpoints: Collection[RunCheckpoint]) -> None:
        """Insert or replace each run's checkpoint; one that has judged no further than the
        stored one (a smaller or equal ``next_second``) leaves the stored one as it is."""
        ...

    async def prune(self, *, keep: Collection[str]) -> int:
        """Drop the checkpoints of every run not in ``keep``; how many went."""
        ...


class NotificationCursorRepo(Protocol):
    """Per notification channel, the sequence number of the last event it has dealt with."""

    async def get(self, channel: str) -> int | None:
        """The channel's cursor, or None for a channel never seen."""
        ...

    async def advance(self, channel: str, seq: int, *, at: datetime) -> None:
        """Move the channel's cursor forward to ``seq`` (never back), creating it if needed."""
        ...


class Transaction(Protocol):
    """One database transaction, with a repository per kind of record."""

    @property
    def policies(self) -> PolicyRepo: ...
    @property
    def deployments(self) -> DeploymentRepo: ...
    @property
    def snapshots(self) -> SnapshotRepo: ...
    @property
    def rollbacks(self) -> RollbackRepo: ...
    @property
    def events(self) -> EventLog: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def observations(self) -> ObservationRepo: ...
    @property
    def tokens(self) -> TokenRepo: ...
    @property
    def leases(self) -> LeaseRepo: ...
    @property
    def checkpoints(self) -> CheckpointRepo: ...
    @property
    def notifications(self) -> NotificationCursorRepo: ...


class Store(Protocol):
    """Transactions. Write transactions are serialised, so event and audit order is commit order."""

    def read(self) -> AbstractAsyncContextManager[Transaction]: ...

    def write(self, *, exclusive: bool = True) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction; ``exclusive`` ones (every audited change) run one at a time.

        Telemetry (observations) writes with ``exclusive=False``: on PostgreSQL it then never
        waits behind, or holds up, a rollback; SQLite has one writer at a time regardless."""
        ...

    async def close(self) -> None: ...


class Subscription(Protocol):
    """A bounded queue of published events; overflow is dropped and counted, never blocking."""

    @property
    def dropped(self) -> int: ...
    async def get(self) -> EventRecord: ...
    def close(self) -> None: ...


class EventBus(Protocol):
    def publish(self, records: Sequence[EventRecord], *, relayed: bool = False) -> None:
        """Hand committed events to every subscriber without waiting for any of them;
        ``relayed``: committed by another process (not for local-only subscribers)."""
        ...

    def advance(self, seq: int) -> None:
        """Treat every event up to ``seq`` as published."""
        ...

    @property
    def last_seq(self) -> int:
        """The highest sequence number published (0: none yet)."""
        ...

    def subscribe(self, *, maxsize: int = 1024, relayed: bool = True) -> Subscription: ...

    @property
    def dropped_total(self) -> int: ...

    @property
    def subscriber_count(self) -> int: ...


class MetricsSource(Protocol):
    """Outcomes read from a metrics system (Prometheus) rather than reported by clients."""

    @property
    def url(self) -> str:
        """Where it reads from (no credentials), for messages."""
        ...

    async def pull(
        self,
        deployment: str,
        selectors: PrometheusSelectors,
        *,
        now: float,
        until: float,
        canary_since: float | None = None,
    ) -> dict[tuple[Variant, int], SecondStats]:
        """What ``deployment``'s series counted since the last pull, per variant and second:
        read at ``now``, counting samples up to ``until`` (later ones at the next pull); at the
        first pull the last hour. The canary's increases over intervals that began before
        ``canary_since`` are left out."""
        ...

    async def check(self, selectors: PrometheusSelectors) -> None:
        """Raise ``InvalidInput`` naming the selector the metrics system refuses, or saying
        that it does not answer."""
        ...

    def forget(self, keep: Collection[str]) -> None:
        """Drop what is kept for deployments not in ``keep``."""
        ...

    async def close(self) -> None: ...


class Notifier(Protocol):
    """One notification channel's way out: a webhook, Slack, email.

    ``send`` delivers one alert once, or raises ``DeliveryFailed`` (``permanent`` when trying
    again cannot help); the engine retries, and never makes a rollback wait for it.
    """

    @property
    def name(self) -> str:
        """The channel's name, unique among channels (it keys the channel's cursor)."""
        ...

    @property
    def kind(self) -> str:
        """What sort of channel: ``webhook``, ``slack``, ``email``."""
        ...

    async def send(self, alert: RollbackAlert, record: EventRecord) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Channel:
    """A notification channel: where alerts go (``notifier``) and which (``rule``)."""

    notifier: Notifier
    rule: ChannelRule

    @property
    def name(self) -> str:
        return self.notifier.name
