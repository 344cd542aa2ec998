"""Shared fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``CANARYGUARD_TEST_PG`` (default: the local server, trust auth, database
``test``). Each test gets a schema of its own, dropped afterwards. When no server answers, the
PostgreSQL cases are skipped with the reason, unless ``CANARYGUARD_REQUIRE_SERVICES=1`` (CI),
where they fail instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard
from tests.receivers import Receiver
from tests.servers import RunningServer, running_server

PG_DSN = os.environ.get("CANARYGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("CANARYGUARD_REQUIRE_SERVICES") == "1"

_pg_problem: str | None = None
_pg_checked = False


def _postgres_problem() -> str | None:
    global _pg_checked, _pg_problem  # noqa: PLW0603 - probe the server once per session
    if not _pg_checked:
        _pg_checked = True
        try:
            with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            _pg_problem = f"PostgreSQL at {PG_DSN} does not answer: {exc}".strip()
    return _pg_problem


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"CANARYGUARD_REQUIRE_SERVICES=1 but {problem}")
    pytest.skip(f"SKIPPING POSTGRESQL TEST: {problem}")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema; yields a SQLAlchemy URL whose search_path is that schema."""
    require_postgres()
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    base = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'canaryguard.db'}"
    url: str = request.getfixturevalue("pg_schema")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def serve_db(request: pytest.FixtureRequest) -> str | None:
    """What ``serve --db`` gets on each backend: None for the embedded SQLite file in the data
    directory, else a PostgreSQL URL (its own schema)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_schema"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def keys() -> AesGcmKeyRing:
    return AesGcmKeyRing.generate()


@pytest.fixture
async def app(
    db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> AsyncIterator[CanaryGuard]:
    """canaryguard on a real database with a manual clock, opened by the composition root."""
    guard = await open_canaryguard(
        Settings(data_dir=tmp_path / "data", db_url=db_url), clock=clock, keys=keys
    )
    yield guard
    await guard.close()


@pytest.fixture
async def other_replica(
    db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> AsyncIterator[CanaryGuard]:
    """A second replica on the same database, clock and keys as ``app``."""
    guard = await open_canaryguard(
        Settings(data_dir=tmp_path / "other", db_url=db_url), clock=clock, keys=keys
    )
    yield guard
    await guard.close()


@pytest.fixture
def server(serve_db: str | None, tmp_path: Path) -> Iterator[RunningServer]:
    """A real canaryguard server on loopback: the embedded default, or PostgreSQL."""
    with running_server(tmp_path / "data", serve_db, heartbeat_seconds=0.5) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """An HTTP receiver on loopback that records requests (webhooks, Slack)."""
    running = Receiver()
    await running.start()
    yield running
    await running.stop()
