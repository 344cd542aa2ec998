"""The in-process event bus: bounded queues per subscriber; overflow is dropped and counted.

A publisher never waits for a subscriber. A subscriber that fell behind sees ``dropped`` grow and
catches up from the stored event log (``EventFeed`` in the engine does this for it).

The bus also carries the events other processes on the same database committed, *relayed* from
the log in sequence order (``engine.unit.publish_in_order``); a subscriber that counts this
process's own work (the metrics exporter) asks for local events only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from canaryguard.domain.events import EventRecord

__all__ = ["InProcessBus", "QueueSubscription"]


class QueueSubscription:
    def __init__(self, bus: InProcessBus, maxsize: int, *, relayed: bool = True) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[EventRecord] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        self.relayed = relayed  # also the events other processes committed

    def offer(self, record: EventRecord) -> bool:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def get(self) -> EventRecord:
        return await self._queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class InProcessBus:
    """Fan-out of committed events to many subscribers in one process."""

    def __init__(self) -> None:
        self._subscribers: list[QueueSubscription] = []
        self.dropped_total = 0
        self.published_total = 0
        self.last_seq = 0  # the highest sequence number published (0: none yet)

    def publish(self, records: Sequence[EventRecord], *, relayed: bool = False) -> None:
        for record in records:
            self.published_total += 1
            self.last_seq = max(self.last_seq, record.seq)
            for subscriber in list(self._subscribers):
                if relayed and not subscriber.relayed:
                    continue
                if not subscriber.offer(record):
                    self.dropped_total += 1

    def advance(self, seq: int) -> None:
        """Treat everything up to ``seq`` as published (where relaying starts)."""
        self.last_seq = max(self.last_seq, seq)

    def subscribe(self, *, maxsize: int = 1024, relayed: bool = True) -> QueueSubscription:
        subscription = QueueSubscription(self, maxsize, relayed=relayed)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: QueueSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
