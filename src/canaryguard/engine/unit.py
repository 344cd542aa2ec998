"""The unit of work every audited change goes through.

One write transaction holds the change, its events (the outbox) and its audit record; the events
are handed to the bus only after the commit, so no event ever announces a change that did not
happen (invariant 1).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canaryguard.domain.audit import AuditEntry
from canaryguard.domain.canonical import is_unicode
from canaryguard.domain.checks import Extension
from canaryguard.domain.errors import Conflict, InvalidInput, NotFound
from canaryguard.domain.events import Event, EventRecord
from canaryguard.domain.models import AuditRecord, Deployment
from canaryguard.domain.windows import WindowStore
from canaryguard.engine.ports import (
    Channel,
    Clock,
    EventBus,
    KeyRing,
    MetricsSource,
    Store,
    Transaction,
)

__all__ = ["Ports", "Unit", "check_actor", "check_text", "load_for_write", "new_id", "unit_of_work"]

MAX_ACTOR = 128
MAX_TEXT = 2_000


Fence = Callable[[Transaction, str], Awaitable[None]]


@dataclass(frozen=True)
class Ports:
    """The adapters the engine runs on, filled in by the composition root."""

    store: Store
    bus: EventBus
    clock: Clock
    keys: KeyRing
    # Recent observations in memory: ingestion writes them, the monitor and snapshots read them.
    windows: WindowStore = field(default_factory=WindowStore, repr=False, compare=False)
    # Python rollback conditions by entry point name (``canaryguard.conditions``).
    extensions: Mapping[str, Extension] = field(default_factory=dict, repr=False, compare=False)
    # Held from before a change's transaction until its events are published, so this process
    # publishes events in commit (= sequence) order; the database serialises the writes anyway.
    publish_order: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    # Checks run first in every change's transaction, given it and the actor: the controller
    # lease's fencing (``engine.leadership``), added when a server leads.
    fences: list[Fence] = field(default_factory=list, repr=False, compare=False)
    # Where outcomes are read besides clients' reports (``serve --prometheus URL``); None: none.
    metrics_source: MetricsSource | None = field(default=None, repr=False, compare=False)
    # Where alerts go (``serve --notifications FILE``); empty: nowhere.
    channels: Sequence[Channel] = field(default=(), repr=False, compare=False)


@dataclass
class Unit:
    """One change in progress: its transaction, its time, its actor, the events it wrote."""

    tx: Transaction
    now: datetime
    actor: str
    records: list[EventRecord] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # snapshots retention dropped in this change

    async def emit(
        self, event: Event, *, deployment: str | None, revision: int | None
    ) -> EventRecord:
        record = await self.tx.events.append(
            event, deployment=deployment, revision=revision, time=self.now
        )
        self.records.append(record)
        return record

    async def audit(
        self,
        action: str,
        *,
        deployment: str | None = None,
        reason: str | None = None,
        revision_before: int | None = None,
        revision_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        details = dict(details or {})
        if self.pruned:  # retention is part of the change that made it necessary
            details["pruned_snapshots"] = self.pruned
            self.pruned = []
        return await self.tx.audit.append(
            AuditEntry(
                actor=self.actor,
                action=action,
                time=self.now,
                deployment=deployment,
                reason=reason,
                revision_before=revision_before,
                revision_after=revision_after,
                details=details,
            )
        )


LOG_PAGE = 500  # events read from the log at a time


@asynccontextmanager
async def unit_of_work(ports: Ports, actor: str) -> AsyncIterator[Unit]:
    """Run a change in one exclusive write transaction; publish its events after the commit."""
    actor = check_actor(actor)
    async with ports.publish_order:
        async with ports.store.write() as tx:
            for fence in ports.fences:
                await fence(tx, actor)
            unit = Unit(tx=tx, now=ports.clock.now(), actor=actor)
            yield unit
        await publish_in_order(ports, unit.records)


async def publish_in_order(ports: Ports, records: Sequence[EventRecord]) -> None:
    """Publish this process's committed ``records`` (under ``publish_order``), first relaying
    from the log whatever other processes committed before them: the bus then carries every
    event in sequence order, so followers that skip what they have seen skip nothing new."""
    bus = ports.bus
    if records and bus.last_seq and records[0].seq > bus.last_seq + 1:
        await relay_committed(ports, before=records[0].seq)
    bus.publish(records)


async def relay_committed(ports: Ports, *, before: int | None = None) -> int:
    """Publish, as relayed, the logged events after the bus's last one (and before
    ``before``): what other processes committed. Call under ``publish_order``; how many."""
    bus, relayed = ports.bus, 0
    async for page in logged_after(ports, bus.last_seq):
        due = [record for record in page if before is None or record.seq < before]
        if due:
            bus.publish(due, relayed=True)
            relayed += len(due)
        if len(due) < len(page):
            break
    return relayed


async def logged_after(
    ports: Ports, after_seq: int, *, deployment: str | None = None
) -> AsyncIterator[list[EventRecord]]:
    """The event log after ``after_seq`` (for ``deployment`` only, if given), page by page."""
    while True:
        async with ports.store.read() as tx:
            page = await tx.events.read(after_seq=after_seq, deployment=deployment, limit=LOG_PAGE)
        if page:
            yield page
        if len(page) < LOG_PAGE:
            return
        after_seq = page[-1].seq


async def load_for_write(tx: Transaction, name: str, expected_revision: int | None) -> Deployment:
    """The deployment ``name``, refusing a writer whose revision is stale (invariant 4)."""
    deployment = await tx.deployments.get(name)
    if deployment is None:
        raise NotFound(f"no deployment named {name!r}")
    if expected_revision is not None and expected_revision != deployment.revision:
        raise Conflict(
            f"deployment {name} is at revision {deployment.revision}, not {expected_revision} "
            "as read: reload it and try again",
            current_revision=deployment.revision,
        )
    return deployment


def new_id(prefix: str) -> str:
    """A random id with a readable prefix: ``snap-3f9a0c1d2e4b5a6c``."""
    return f"{prefix}-{secrets.token_hex(8)}"


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > MAX_ACTOR or "\x00" in actor:
        raise InvalidInput(
            f"every change names its actor: a non-empty name of at most {MAX_ACTOR} characters"
        )
    return actor.strip()


def check_text(value: str, what: str, *, required: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, not {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInput(f"{what} is required: say why")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{what} is {len(value)} characters; at most {MAX_TEXT} are kept")
    if "\x00" in value:  # PostgreSQL text cannot hold it, so no backend takes it
        raise InvalidInput(f"{what} contains a NUL character")
    if not is_unicode(value):
        raise InvalidInput(f"{what} holds a lone UTF-16 surrogate, which is not Unicode text")
    return value.strip()
