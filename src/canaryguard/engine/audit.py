"""Reading and verifying the audit log. Nothing here, or anywhere, changes a record."""

from __future__ import annotations

from collections.abc import AsyncIterator

from canaryguard.domain.audit import ChainVerdict, verify_chain
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.models import AuditRecord
from canaryguard.engine.unit import Ports

__all__ = ["AuditService"]

_PAGE = 1_000


class AuditService:
    def __init__(self, ports: Ports) -> None:
        self._ports = ports

    async def list(
        self, *, deployment: str | None = None, after_seq: int = 0, limit: int = 100
    ) -> list[AuditRecord]:
        if not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
        async with self._ports.store.read() as tx:
            return await tx.audit.read(after_seq=after_seq, deployment=deployment, limit=limit)

    async def _up_to(self, last_seq: int) -> AsyncIterator[AuditRecord]:
        after = 0
        while after < last_seq:
            async with self._ports.store.read() as tx:
                page = await tx.audit.read(after_seq=after, limit=_PAGE)
            for record in page:
                if record.seq > last_seq:
                    return
                yield record
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    async def verify(self) -> ChainVerdict:
        """Check the chain up to its head; the verdict names the first record changed, removed
        or moved. Records appended while it runs are past the head it read: the next run checks
        them."""
        async with self._ports.store.read() as tx:
            head = await tx.audit.head()
            beyond = await tx.audit.read(after_seq=head[0] if head else 0, limit=1)
        records = [record async for record in self._up_to(head[0] if head else 0)]
        if beyond:
            # a record past the head that a concurrent append did not put there
            records.append(beyond[0])
        return verify_chain(records, head=head)
