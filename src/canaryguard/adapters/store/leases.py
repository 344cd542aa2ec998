"""The controller lease in SQL: one row per lease, claimed, renewed and taken over in place."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import controller_leases, insert_on_conflict

__all__ = ["SqlLeaseRepo"]

_L = controller_leases.c


class SqlLeaseRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, name: str, *, holder: str, now: datetime, until: datetime) -> int | None:
        # FOR UPDATE: two replicas that find the lease expired at once take it over one after
        # the other, and the second sees the first's epoch and holder (SQLite: one writer anyway)
        row = (
            await self._conn.execute(
                sa.select(_L.holder, _L.epoch, _L.expires_at)
                .where(_L.name == name)
                .with_for_update()
            )
        ).first()
        if row is None:
            # of two first claims at once, one inserts and the other does nothing: it lost
            inserted = await self._conn.execute(
                insert_on_conflict(self._conn, controller_leases)
                .values(name=name, holder=holder, epoch=1, expires_at=until)
                .on_conflict_do_nothing()
                .returning(_L.epoch)
            )
            return 1 if inserted.first() is not None else None
        current_holder, epoch, expires_at = row
        if current_holder == holder:
            epoch = int(epoch)
        elif expires_at <= now:
            epoch = int(epoch) + 1  # a takeover: the old holder's token stops working
        else:
            return None
        await self._conn.execute(
            sa.update(controller_leases)
            .where(_L.name == name)
            .values(holder=holder, epoch=epoch, expires_at=until)
        )
        return epoch

    async def holder(self, name: str) -> tuple[str, int] | None:
        # FOR SHARE: a takeover (FOR UPDATE) waits until the fenced change has committed
        row = (
            await self._conn.execute(
                sa.select(_L.holder, _L.epoch).where(_L.name == name).with_for_update(read=True)
            )
        ).first()
        return (str(row[0]), int(row[1])) if row is not None else None

    async def release(self, name: str, *, holder: str, at: datetime) -> None:
        await self._conn.execute(
            sa.update(controller_leases)
            .where(_L.name == name, _L.holder == holder)
            .values(expires_at=at)
        )
