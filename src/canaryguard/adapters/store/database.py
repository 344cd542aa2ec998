"""The SQL store: engines, transactions, and migrations applied on open.

SQLite (the embedded default) runs in WAL mode, its statements inline on the event loop (see
``inline_sqlite``); write transactions start with ``BEGIN IMMEDIATE`` so two writers queue
instead of failing on a lock upgrade, and wait for the lock asynchronously. PostgreSQL
write transactions lock the audit head row first. Either way writes are serialised, which keeps
revisions, the event log and the audit chain in commit order.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from canaryguard.adapters.store.audit import SqlAuditLog
from canaryguard.adapters.store.checkpoints import SqlCheckpointRepo
from canaryguard.adapters.store.deployments import SqlDeploymentRepo
from canaryguard.adapters.store.events import SqlEventLog
from canaryguard.adapters.store.inline_sqlite import BUSY_MS, Checkpointer, inline_connector
from canaryguard.adapters.store.leases import SqlLeaseRepo
from canaryguard.adapters.store.notifications import SqlNotificationCursorRepo
from canaryguard.adapters.store.observations import SqlObservationRepo
from canaryguard.adapters.store.policies import SqlPolicyRepo
from canaryguard.adapters.store.rollbacks import SqlRollbackRepo
from canaryguard.adapters.store.schema import audit_head
from canaryguard.adapters.store.snapshots import SqlSnapshotRepo
from canaryguard.adapters.store.tokens import SqlTokenRepo
from canaryguard.domain.errors import InvalidInput, Unavailable

__all__ = ["SqlStore", "SqlTransaction", "open_store"]

_WRITE = "canaryguard_write"
LOCK_WAIT_SECONDS = 10.0  # how long a writer waits for another process's SQLite write lock
# an arbitrary constant: the advisory lock that keeps two processes from migrating at once
_MIGRATION_LOCK = 0x63616E617279


@dataclass(frozen=True)
class SqlTransaction:
    """The repositories of one transaction, all on the same connection."""

    policies: SqlPolicyRepo
    deployments: SqlDeploymentRepo
    snapshots: SqlSnapshotRepo
    rollbacks: SqlRollbackRepo
    events: SqlEventLog
    audit: SqlAuditLog
    observations: SqlObservationRepo
    tokens: SqlTokenRepo
    leases: SqlLeaseRepo
    checkpoints: SqlCheckpointRepo
    notifications: SqlNotificationCursorRepo

    @classmethod
    def on(
        cls, conn: AsyncConnection, *, audit_head: tuple[int, str] | None = None
    ) -> SqlTransaction:
        return cls(
            policies=SqlPolicyRepo(conn),
            deployments=SqlDeploymentRepo(conn),
            snapshots=SqlSnapshotRepo(conn),
            rollbacks=SqlRollbackRepo(conn),
            events=SqlEventLog(conn),
            audit=SqlAuditLog(conn, head=audit_head),
            observations=SqlObservationRepo(conn),
            tokens=SqlTokenRepo(conn),
            leases=SqlLeaseRepo(conn),
            checkpoints=SqlCheckpointRepo(conn),
            notifications=SqlNotificationCursorRepo(conn),
        )


_LOCK_HEAD = (
    sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)


@asynccontextmanager
async def _nul_is_bad_input() -> AsyncIterator[None]:
    """PostgreSQL refuses NUL characters in text; that is the caller's input, not a failure."""
    try:
        yield
    except sa.exc.DataError as exc:
        if "NUL" not in str(exc):
            raise
        raise InvalidInput("text must not contain NUL characters") from exc


class SqlStore:
    """The ``Store`` port on SQLAlchemy (async): SQLite (aiosqlite) or PostgreSQL (psycopg)."""

    def __init__(self, engine: AsyncEngine, *, checkpointer: Checkpointer | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._checkpointer = checkpointer

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlTransaction]:
        async with _nul_is_bad_input(), self.engine.connect() as conn:
            if self.dialect == "postgresql":
                # one consistent view for every statement of the read, as SQLite's WAL gives
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield SqlTransaction.on(conn)

    @asynccontextmanager
    async def write(self, *, exclusive: bool = True) -> AsyncIterator[SqlTransaction]:
        async with _nul_is_bad_input(), self.engine.connect() as conn:
            await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                head = None
                if exclusive and self.dialect == "postgresql":
                    locked = await conn.execute(_LOCK_HEAD)
                    seq, digest = locked.one()
                    head = (int(seq), str(digest))
                yield SqlTransaction.on(conn, audit_head=head)
        if self._checkpointer is not None:
            self._checkpointer.wrote()

    async def close(self) -> None:
        await self.engine.dispose()
        if self._checkpointer is not None:
            await self._checkpointer.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer does it, off the commit path
    cursor.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN for reads; BEGIN IMMEDIATE (the write lock, up front) for writes.

    While another process holds the write lock, wait with ``asyncio.sleep`` between tries:
    SQLite's own busy wait would block the event loop (statements run inline).
    """
    if not conn.get_execution_options().get(_WRITE, False):
        conn.exec_driver_sql("BEGIN")
        return
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    pause = 0.001
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            await_only(asyncio.sleep(pause))
            pause = min(pause * 2, 0.05)
        else:
            return


def migration_config(sync_conn: Connection) -> Config:
    """Alembic's configuration for canaryguard's migrations, on ``sync_conn``."""
    config = Config()
    config.set_main_option("script_location", "canaryguard.adapters.store:migrations")
    config.attributes["connection"] = sync_conn
    return config


def _migrate(sync_conn: Connection) -> None:
    if sync_conn.dialect.name == "postgresql":
        sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    command.upgrade(migration_config(sync_conn), "head")


def normalise_url(url: str) -> str:
    """Accept the usual spellings and pick the async driver canaryguard uses for each backend."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


async def open_store(url: str, *, pool_size: int = 20) -> SqlStore:
    """Open (and migrate to the newest schema) the database at ``url``."""
    url = normalise_url(url)
    checkpointer = None
    if url.startswith("sqlite"):
        path = make_url(url).database or ""
        if path in ("", ":memory:"):
            raise ValueError("canaryguard keeps SQLite in a file: use sqlite:///PATH")
        # SQLite gives the WAL and shared-memory files the database file's mode: owner only
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        # connections are cheap but each new one re-runs the PRAGMAs: keep enough of them
        engine = create_async_engine(
            url, async_creator=inline_connector(path), pool_size=pool_size, max_overflow=pool_size
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        checkpointer = Checkpointer(path)
    else:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
    store = SqlStore(engine, checkpointer=checkpointer)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                await conn.run_sync(_migrate)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        await engine.dispose()
        where = make_url(url).render_as_string(hide_password=True)
        raise Unavailable(f"the database at {where} does not answer: {exc.orig}") from exc
    except BaseException:
        await engine.dispose()
        raise
    return store
