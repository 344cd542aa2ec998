"""The event log (the outbox): events written in the change's own transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import event_log
from canaryguard.domain.events import Event, EventRecord, event_adapter

__all__ = ["SqlEventLog"]


_INSERT = event_log.insert().returning(event_log.c.seq)  # built once: the hot path


class SqlEventLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(
        self, event: Event, *, deployment: str | None, revision: int | None, time: datetime
    ) -> EventRecord:
        result = await self._conn.execute(
            _INSERT,
            {
                "deployment": deployment,
                "type": event.type,
                "time": time,
                "revision": revision,
                "data": event.model_dump_json(),
            },
        )
        seq = result.scalar_one()
        return EventRecord(
            seq=seq, deployment=deployment, time=time, revision=revision, event=event
        )

    async def last_seq(self) -> int:
        query = sa.select(sa.func.max(event_log.c.seq))
        return int((await self._conn.execute(query)).scalar_one_or_none() or 0)

    async def read(
        self, *, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[EventRecord]:
        query = (
            sa.select(event_log)
            .where(event_log.c.seq > after_seq)
            .order_by(event_log.c.seq)
            .limit(limit)
        )
        if deployment is not None:
            query = query.where(event_log.c.deployment == deployment)
        return [
            EventRecord(
                seq=row["seq"],
                deployment=row["deployment"],
                time=row["time"],
                revision=row["revision"],
                event=event_adapter.validate_json(row["data"]),
            )
            for row in (await self._conn.execute(query)).mappings()
        ]
