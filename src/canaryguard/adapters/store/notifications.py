"""Notification cursors in SQL: one row per channel, moved only forward."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import insert_on_conflict, notification_cursors

__all__ = ["SqlNotificationCursorRepo"]

_C = notification_cursors.c


class SqlNotificationCursorRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, channel: str) -> int | None:
        value = await self._conn.scalar(sa.select(_C.last_seq).where(_C.channel == channel))
        return None if value is None else int(value)

    async def advance(self, channel: str, seq: int, *, at: datetime) -> None:
        statement = insert_on_conflict(self._conn, notification_cursors).values(
            channel=channel, last_seq=seq, updated_at=at
        )
        # a replica that lost the lease mid-delivery may still write: never move a cursor back
        await self._conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_C.channel],
                set_={"last_seq": statement.excluded.last_seq, "updated_at": at},
                where=_C.last_seq < statement.excluded.last_seq,
            )
        )
