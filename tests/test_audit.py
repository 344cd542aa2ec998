"""The audit log: hash chain verification catches changed, removed, reordered records."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from canaryguard.adapters.store import SqlStore
from canaryguard.adapters.store.schema import audit_log
from canaryguard.domain.audit import GENESIS_HASH, AuditEntry, seal_entry, verify_chain
from canaryguard.domain.models import AuditRecord
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR, seed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        record = seal_entry(AuditEntry(actor="a", action=f"op{i}", time=T0), seq=i, prev_hash=prev)
        records.append(record)
        prev = record.hash
    return records


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return records[-1].seq, records[-1].hash


def test_intact_chain_verifies() -> None:
    records = chain(5)
    assert verify_chain(records, head=head_of(records)).ok


def test_changed_record_is_named() -> None:
    records = chain(5)
    head = head_of(records)
    records[2] = records[2].model_copy(update={"actor": "mallory"})
    verdict = verify_chain(records, head=head)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert "changed" in (verdict.problem or "")


def test_removed_record_is_named() -> None:
    records = chain(5)
    head = head_of(records)
    del records[1]
    verdict = verify_chain(records, head=head)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)
    assert "missing" in (verdict.problem or "")


def test_removed_tail_is_caught_by_the_head() -> None:
    records = chain(5)
    verdict = verify_chain(records[:3], head=head_of(records))
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)


def test_swapped_records_are_named() -> None:
    records = chain(5)
    head = head_of(records)
    a, b = records[1], records[2]
    records[1] = b.model_copy(update={"seq": 2})
    records[2] = a.model_copy(update={"seq": 3})
    verdict = verify_chain(records, head=head)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)


async def _engine(app: CanaryGuard) -> AsyncEngine:
    store = app.ports.store
    assert isinstance(store, SqlStore)
    return store.engine


async def _tamper(app: CanaryGuard, *statements: sa.Executable) -> None:
    """Change the audit table as an attacker who can drop its triggers would."""
    engine = await _engine(app)
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            await conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(sa.text("DROP TRIGGER audit_log_no_delete"))
        for statement in statements:
            await conn.execute(statement)


async def test_the_database_refuses_to_update_an_audit_record(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with (await _engine(app)).begin() as conn:
            await conn.execute(audit_log.update().where(audit_log.c.seq == 1).values(actor="x"))


async def test_the_database_refuses_to_delete_an_audit_record(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with (await _engine(app)).begin() as conn:
            await conn.execute(audit_log.delete().where(audit_log.c.seq == 1))


async def test_stored_chain_verifies(app: CanaryGuard) -> None:
    await seed(app)
    verdict = await app.audit.verify()
    assert (verdict.ok, verdict.checked) == (True, 3)


async def test_changed_row_in_the_database_is_caught(app: CanaryGuard) -> None:
    await seed(app)
    await _tamper(app, audit_log.update().where(audit_log.c.seq == 2).values(actor="mallory"))
    verdict = await app.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)


async def test_deleted_row_in_the_database_is_caught(app: CanaryGuard) -> None:
    await seed(app)
    await _tamper(app, audit_log.delete().where(audit_log.c.seq == 2))
    verdict = await app.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)


async def test_swapped_rows_in_the_database_are_caught(app: CanaryGuard) -> None:
    await seed(app)
    await _tamper(
        app,
        audit_log.update().where(audit_log.c.seq == 2).values(seq=-2),
        audit_log.update().where(audit_log.c.seq == 3).values(seq=2),
        audit_log.update().where(audit_log.c.seq == -2).values(seq=3),
    )
    verdict = await app.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)


async def test_audit_records_actor_reason_and_revisions(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary("shop/security", policy="sec@2", percent=10, actor=ACTOR)
    await app.deployments.abort("shop/security", reason="wrong week", actor="bob")
    entry = (await app.audit.list(deployment="shop/security"))[-1]
    assert (
        entry.actor,
        entry.action,
        entry.reason,
        entry.revision_before,
        entry.revision_after,
    ) == (
        "bob",
        "deployment.abort",
        "wrong week",
        2,
        3,
    )


def test_records_beyond_the_head_are_caught() -> None:
    records = chain(5)
    verdict = verify_chain(records, head=head_of(records[:3]))
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
    assert "head" in (verdict.problem or "")


@pytest.mark.parametrize("details", ["not json", '{"x": NaN}', "[1]"])
async def test_details_changed_into_something_unreadable_are_named_not_a_crash(
    app: CanaryGuard, details: str
) -> None:
    await seed(app)
    await _tamper(app, audit_log.update().where(audit_log.c.seq == 2).values(details=details))
    verdict = await app.audit.verify()
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)
