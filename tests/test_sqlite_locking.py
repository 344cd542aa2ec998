"""SQLite runs inline on the event loop; waiting for another process's write lock must not block it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import database
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR, seed


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[CanaryGuard]:
    guard = await open_canaryguard(Settings(data_dir=tmp_path), keys=AesGcmKeyRing.generate())
    await seed(guard)
    yield guard
    await guard.close()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's writer, as far as SQLite can tell."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_writer_waits_for_the_lock_without_blocking_the_loop(
    local: CanaryGuard, tmp_path: Path
) -> None:
    other = hold_write_lock(tmp_path / "canaryguard.db")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    write = asyncio.create_task(local.snapshots.create("shop/security", actor=ACTOR))
    await asyncio.sleep(0.5)
    assert not write.done()  # still waiting for the lock ...
    assert ticks > 10  # ... while the loop kept running (blocked, it would tick once)
    other.rollback()
    other.close()
    snapshot = await asyncio.wait_for(write, 5)
    ticking.cancel()
    assert (await local.snapshots.get(snapshot.id)).id == snapshot.id


async def test_writer_gives_up_after_the_lock_wait_limit(
    local: CanaryGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "LOCK_WAIT_SECONDS", 0.3)
    other = hold_write_lock(tmp_path / "canaryguard.db")
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            await local.snapshots.create("shop/security", actor=ACTOR)
    finally:
        other.rollback()
        other.close()


async def test_reads_do_not_wait_for_a_writer(local: CanaryGuard, tmp_path: Path) -> None:
    other = hold_write_lock(tmp_path / "canaryguard.db")
    try:
        deployment = await asyncio.wait_for(local.deployments.get("shop/security"), 1)
    finally:
        other.rollback()
        other.close()
    assert deployment.revision == 1


async def test_in_memory_sqlite_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file"):
        await open_canaryguard(Settings(data_dir=tmp_path, db_url="sqlite:///:memory:"))


async def test_wal_is_checkpointed_in_the_background_not_in_commits(
    local: CanaryGuard, tmp_path: Path
) -> None:
    database_file = tmp_path / "canaryguard.db"
    before = database_file.stat().st_mtime_ns
    for _ in range(5):
        await local.snapshots.create("shop/security", actor=ACTOR)
    committed = database_file.stat().st_mtime_ns  # commits went to the WAL only
    await asyncio.sleep(1.6)  # the checkpointer runs about once a second after writes
    assert committed == before
    assert database_file.stat().st_mtime_ns > committed
