"""SQLite for the async engine, run inline on the event loop instead of in a helper thread.

aiosqlite sends every call (cursor, execute, fetch, close) to a thread and waits for the
answer: four thread round trips per statement, which made a snapshot cost ~9 ms on this
project's benchmark. SQLite answers these in microseconds from its page cache, so running them
on the loop is cheaper than the hand-over. The one call that can wait long, taking the write lock
at ``BEGIN IMMEDIATE`` while another process holds it, is retried with ``asyncio.sleep`` (see
``database._sqlite_begin``), so the loop never blocks on a lock for more than ``BUSY_MS``.

The objects here mimic the part of aiosqlite's interface that SQLAlchemy's aiosqlite dialect
uses; SQLAlchemy gets them through ``create_async_engine(..., async_creator=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

__all__ = ["BUSY_MS", "Checkpointer", "InlineConnection", "inline_connector"]

BUSY_MS = 10  # longest one statement may block the loop waiting for a lock


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters if parameters is not None else ())
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """A ``sqlite3`` connection behind aiosqlite's method names."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = connection

    @property
    def _connection(self) -> sqlite3.Connection | None:  # SQLAlchemy checks this before commit
        return self._conn

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("no active connection")
        return self._conn

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._live().cursor())

    @property
    def isolation_level(self) -> str | None:
        return self._live().isolation_level

    async def commit(self) -> None:
        self._live().commit()

    async def rollback(self) -> None:
        self._live().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._live().create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def inline_connector(path: str) -> Callable[[], Coroutine[Any, Any, InlineConnection]]:
    """The ``async_creator`` for an SQLite file at ``path``."""

    async def connect() -> InlineConnection:
        # isolation_level=None: SQLAlchemy's "begin" hook issues BEGIN itself (database.py)
        connection = sqlite3.connect(
            path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        return InlineConnection(connection)

    return connect


class Checkpointer:
    """Moves WAL checkpoints off the commit path.

    With SQLite's automatic checkpoints, every ~80th commit also copies the WAL into the
    database and syncs it, a few milliseconds inside someone's transaction. Connections here
    turn that off (``wal_autocheckpoint=0``); instead, about once a second after writes, a
    passive checkpoint runs on its own connection in a worker thread, never blocking the loop
    or a writer. SQLite also checkpoints when the last connection closes.
    """

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self._path = path
        self._interval = interval
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def wrote(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._dirty:
            await asyncio.sleep(self._interval)
            self._dirty = False
            await asyncio.to_thread(self.checkpoint)

    def checkpoint(self) -> None:
        connection = sqlite3.connect(self._path, timeout=5)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._dirty:
            await asyncio.to_thread(self.checkpoint)
