"""Detector checkpoints in SQL: one row per running canary, replaced by later ones only."""

from __future__ import annotations

import json
from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import detector_checkpoints, insert_on_conflict
from canaryguard.domain.detector import CheckpointError
from canaryguard.domain.judge import RunCheckpoint

__all__ = ["SqlCheckpointRepo"]

_C = detector_checkpoints.c


class SqlCheckpointRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, run: str) -> RunCheckpoint | None:
        row = (
            await self._conn.execute(
                sa.select(_C.run, _C.deployment, _C.next_second, _C.saved_at, _C.body).where(
                    _C.run == run
                )
            )
        ).first()
        if row is None:
            return None
        try:
            detector = json.loads(row.body)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint of run {run!r}: not JSON ({exc})") from exc
        return RunCheckpoint(
            run=row.run,
            deployment=row.deployment,
            next_second=int(row.next_second),
            detector=detector,
            saved_at=row.saved_at,
        )

    async def save(self, checkpoints: Collection[RunCheckpoint]) -> None:
        if not checkpoints:
            return
        statement = insert_on_conflict(self._conn, detector_checkpoints)
        columns = ("deployment", "next_second", "saved_at", "body")
        replace = {name: statement.excluded[name] for name in columns}
        # one statement for every run (executemany); a process that lost the lease mid-tick
        # may still write, but never replaces a checkpoint that has judged further
        await self._conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_C.run],
                set_=replace,
                where=_C.next_second < statement.excluded.next_second,
            ),
            [
                {
                    "run": checkpoint.run,
                    "deployment": checkpoint.deployment,
                    "next_second": checkpoint.next_second,
                    "saved_at": checkpoint.saved_at,
                    # Python writes a float's shortest round-trip form: read back, it is equal
                    "body": json.dumps(checkpoint.detector, separators=(",", ":")),
                }
                for checkpoint in checkpoints
            ],
        )

    async def prune(self, *, keep: Collection[str]) -> int:
        result = await self._conn.execute(
            sa.delete(detector_checkpoints).where(_C.run.not_in(list(keep)))
        )
        return int(result.rowcount)
