"""The audit log in SQL: append-only, hash-chained, with its head row."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import audit_head, audit_log
from canaryguard.domain.audit import GENESIS_HASH, AuditEntry, seal_entry
from canaryguard.domain.canonical import canonical_json
from canaryguard.domain.models import AuditRecord

__all__ = ["UNREADABLE", "SqlAuditLog"]

# the key under which a record shows details that no longer read as a JSON object
UNREADABLE = "unreadable"


# Built once: appending is on every change's path.
_INSERT = audit_log.insert()
_MOVE_HEAD = (
    audit_head.update()
    .where(audit_head.c.id == 1)
    .values(seq=sa.bindparam("new_seq"), hash=sa.bindparam("new_hash"))
)


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection, *, head: tuple[int, str] | None = None) -> None:
        self._conn = conn
        # The write transaction holds the head row (see SqlStore.write), so once read it stays
        # right for the rest of the transaction: later appends need not read it again.
        self._head = head

    async def append(self, entry: AuditEntry) -> AuditRecord:
        if self._head is None:
            self._head = await self.head() or (0, GENESIS_HASH)
        seq, prev_hash = self._head
        record = seal_entry(entry, seq=seq + 1, prev_hash=prev_hash)
        row = record.model_dump()
        row["details"] = canonical_json(record.details)
        await self._conn.execute(_INSERT, row)
        await self._conn.execute(_MOVE_HEAD, {"new_seq": record.seq, "new_hash": record.hash})
        self._head = (record.seq, record.hash)
        return record

    async def read(
        self, *, after_seq: int = 0, deployment: str | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        query = (
            sa.select(audit_log)
            .where(audit_log.c.seq > after_seq)
            .order_by(audit_log.c.seq)
            .limit(limit)
        )
        if deployment is not None:
            query = query.where(audit_log.c.deployment == deployment)
        return [
            AuditRecord(
                seq=row["seq"],
                time=row["time"],
                actor=row["actor"],
                action=row["action"],
                deployment=row["deployment"],
                reason=row["reason"],
                revision_before=row["revision_before"],
                revision_after=row["revision_after"],
                details=_details(row["details"]),
                prev_hash=row["prev_hash"],
                hash=row["hash"],
            )
            for row in (await self._conn.execute(query)).mappings()
        ]

    async def head(self) -> tuple[int, str] | None:
        query = sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
        row = (await self._conn.execute(query)).first()
        if row is None or row.seq == 0:
            return None
        return int(row.seq), str(row.hash)


def _details(stored: str) -> dict[str, Any]:
    """A record's details as written, or, where the stored text is no longer a JSON object
    (changed behind the log's back), that text under ``UNREADABLE``: the record still reads,
    and its hash no longer matches, so ``audit verify`` names it."""
    try:
        details = json.loads(stored)
    except ValueError:
        details = None
    if not isinstance(details, dict):
        return {UNREADABLE: str(stored)[:200]}
    return details
