"""Following the event log: stored events first, then live ones, with nothing missed.

A follower subscribes to the bus *before* reading the log, so an event committed in between is
seen at least once; duplicates are dropped by sequence number. When the bus dropped events for a
slow follower, it reads them back from the log.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from canaryguard.domain.events import EventRecord
from canaryguard.engine.unit import LOG_PAGE, Ports, logged_after, relay_committed

__all__ = ["EventFeed"]


class EventFeed:
    def __init__(self, ports: Ports) -> None:
        self._ports = ports

    async def read(
        self, *, after_seq: int = 0, deployment: str | None = None, limit: int = LOG_PAGE
    ) -> list[EventRecord]:
        async with self._ports.store.read() as tx:
            return await tx.events.read(after_seq=after_seq, deployment=deployment, limit=limit)

    async def last_seq(self) -> int:
        async with self._ports.store.read() as tx:
            return await tx.events.last_seq()

    async def start_relay(self) -> None:
        """Mark the log's current end as published: relaying starts from there."""
        self._ports.bus.advance(await self.last_seq())

    async def relay(self) -> int:
        """Publish on this process's bus what other processes on the database committed since
        the bus's last event, in order (the server calls this a few times a second, so live
        streams on every replica see every replica's changes); how many."""
        async with self._ports.publish_order:
            return await relay_committed(self._ports)

    async def _catch_up(self, after_seq: int, deployment: str | None) -> AsyncIterator[EventRecord]:
        async for page in logged_after(self._ports, after_seq, deployment=deployment):
            for record in page:
                yield record

    async def follow(
        self, *, after_seq: int = 0, deployment: str | None = None
    ) -> AsyncGenerator[EventRecord, None]:
        """Every event after ``after_seq`` (for ``deployment`` only, if given), forever."""
        subscription = self._ports.bus.subscribe()
        last = after_seq
        try:
            async for record in self._catch_up(last, deployment):
                last = record.seq
                yield record
            seen_drops = subscription.dropped
            while True:
                record = await subscription.get()
                if subscription.dropped != seen_drops:
                    seen_drops = subscription.dropped
                    async for missed in self._catch_up(last, deployment):
                        last = missed.seq
                        yield missed
                if record.seq <= last:
                    continue
                if deployment is not None and record.deployment != deployment:
                    continue
                last = record.seq
                yield record
        finally:
            subscription.close()
