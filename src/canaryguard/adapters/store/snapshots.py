"""Sealed snapshots in SQL: a clear-text index and the encrypted body."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.rollbacks import OPEN_STATUSES
from canaryguard.adapters.store.schema import rollbacks, snapshots
from canaryguard.domain.models import SnapshotInfo, SnapshotKind
from canaryguard.engine.ports import SealedSnapshot

__all__ = ["SqlSnapshotRepo"]

_INFO_COLUMNS = (
    snapshots.c.id,
    snapshots.c.deployment,
    snapshots.c.seq,
    snapshots.c.created_at,
    snapshots.c.kind,
    snapshots.c.revision,
    snapshots.c.pinned,
    snapshots.c.key_id,
)


def _info(row: RowMapping) -> SnapshotInfo:
    return SnapshotInfo(
        id=row["id"],
        deployment=row["deployment"],
        seq=row["seq"],
        created_at=row["created_at"],
        kind=SnapshotKind(row["kind"]),
        revision=row["revision"],
        pinned=bool(row["pinned"]),
        key_id=row["key_id"],
    )


def _build_append() -> sa.Executable:
    """INSERT that numbers the snapshot after the deployment's newest one."""
    next_seq = (
        sa.select(sa.func.coalesce(sa.func.max(snapshots.c.seq), 0) + 1)
        .where(snapshots.c.deployment == sa.bindparam("seq_deployment"))
        .scalar_subquery()
    )
    return snapshots.insert().values(seq=next_seq).returning(snapshots.c.seq)


def _build_prune() -> sa.Executable:
    """DELETE of the oldest unprotected snapshots beyond ``keep``, returning their ids."""
    deployment: sa.BindParameter[str] = sa.bindparam("prune_deployment", type_=sa.String)
    keep = sa.bindparam("keep", type_=sa.Integer)
    held = sa.select(sa.func.count()).where(snapshots.c.deployment == deployment).scalar_subquery()
    excess = sa.case((held > keep, held - keep), else_=0)
    open_targets = sa.union(
        *(
            sa.select(column).where(
                rollbacks.c.deployment == deployment,
                rollbacks.c.status.in_(OPEN_STATUSES),
                column.is_not(None),
            )
            for column in (rollbacks.c.target_snapshot_id, rollbacks.c.pre_snapshot_id)
        )
    )
    oldest = (
        sa.select(snapshots.c.id)
        .where(
            snapshots.c.deployment == deployment,
            snapshots.c.pinned.is_(False),
            snapshots.c.id.not_in(sa.bindparam("protect", expanding=True)),
            snapshots.c.id.not_in(open_targets),
        )
        .order_by(snapshots.c.seq)
        .limit(excess)
    )
    return snapshots.delete().where(snapshots.c.id.in_(oldest)).returning(snapshots.c.id)


# Built once: snapshot creation is on every canary start, promotion and rollback.
_APPEND = _build_append()
_GET = sa.select(*_INFO_COLUMNS, snapshots.c.blob).where(
    snapshots.c.id == sa.bindparam("snapshot_id")
)
_PRUNE = _build_prune()


class SqlSnapshotRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def _values(self, sealed: SealedSnapshot) -> dict[str, object]:
        info = sealed.info
        return {
            "id": info.id,
            "deployment": info.deployment,
            "seq": info.seq,
            "created_at": info.created_at,
            "kind": info.kind.value,
            "revision": info.revision,
            "pinned": info.pinned,
            "key_id": info.key_id,
            "blob": sealed.blob,
        }

    async def insert(self, sealed: SealedSnapshot) -> None:
        await self._conn.execute(snapshots.insert().values(**self._values(sealed)))

    async def append(self, sealed: SealedSnapshot) -> SnapshotInfo:
        values = self._values(sealed)
        del values["seq"]  # the statement numbers it
        values["seq_deployment"] = sealed.info.deployment
        result = await self._conn.execute(_APPEND, values)
        return sealed.info.model_copy(update={"seq": result.scalar_one()})

    async def prune(self, deployment: str, *, keep: int, protect: Collection[str]) -> list[str]:
        """One statement: delete the oldest snapshots beyond ``keep``, never a pinned one, one in
        ``protect``, or one an open rollback names (see ``domain.retention`` for the rule)."""
        params = {"prune_deployment": deployment, "keep": keep, "protect": sorted(protect)}
        return sorted((await self._conn.execute(_PRUNE, params)).scalars())

    async def get(self, snapshot_id: str) -> SealedSnapshot | None:
        row = (await self._conn.execute(_GET, {"snapshot_id": snapshot_id})).mappings().first()
        return SealedSnapshot(info=_info(row), blob=bytes(row["blob"])) if row is not None else None

    async def of_deployment(self, deployment: str) -> list[SnapshotInfo]:
        query = (
            sa.select(*_INFO_COLUMNS)
            .where(snapshots.c.deployment == deployment)
            .order_by(snapshots.c.seq)
        )
        return [_info(row) for row in (await self._conn.execute(query)).mappings()]

    async def delete(self, snapshot_ids: Sequence[str]) -> None:
        if snapshot_ids:
            await self._conn.execute(snapshots.delete().where(snapshots.c.id.in_(snapshot_ids)))

    async def set_pinned(self, snapshot_id: str, *, pinned: bool) -> None:
        await self._conn.execute(
            snapshots.update().where(snapshots.c.id == snapshot_id).values(pinned=pinned)
        )

    async def replace_blob(self, snapshot_id: str, *, key_id: str, blob: bytes) -> None:
        await self._conn.execute(
            snapshots.update().where(snapshots.c.id == snapshot_id).values(key_id=key_id, blob=blob)
        )

    async def count(self) -> int:
        query = sa.select(sa.func.count()).select_from(snapshots)
        return int((await self._conn.execute(query)).scalar_one())

    async def ids_not_under(self, key_id: str, *, limit: int) -> list[str]:
        query = (
            sa.select(snapshots.c.id)
            .where(snapshots.c.key_id != key_id)
            .order_by(snapshots.c.id)
            .limit(limit)
        )
        return list((await self._conn.execute(query)).scalars())
