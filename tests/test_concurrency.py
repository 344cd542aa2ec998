"""Twenty concurrent writers on one deployment, each with its own connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from canaryguard.adapters.bus import InProcessBus
from canaryguard.adapters.clock import SystemClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import open_store
from canaryguard.domain.errors import Conflict
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.unit import Ports
from tests.helpers import ACTOR, seed

NAME = "shop/security"
WRITERS = 20


@pytest.fixture
async def writers(db_url: str, keys: AesGcmKeyRing) -> AsyncIterator[list[CanaryGuard]]:
    """Twenty independent instances on one database, as twenty processes would be."""
    first = CanaryGuard(
        Ports(store=await open_store(db_url), bus=InProcessBus(), clock=SystemClock(), keys=keys)
    )
    await seed(first)
    await first.deployments.start_canary(NAME, policy="sec@2", percent=1, actor=ACTOR)
    rest = [
        CanaryGuard(
            Ports(
                store=await open_store(db_url), bus=InProcessBus(), clock=SystemClock(), keys=keys
            )
        )
        for _ in range(WRITERS - 1)
    ]
    yield [first, *rest]
    for guard in [first, *rest]:
        await guard.close()


async def test_writers_with_the_same_revision_one_wins_the_rest_conflict(
    writers: list[CanaryGuard],
) -> None:
    read = (await writers[0].deployments.get(NAME)).revision
    results = await asyncio.gather(
        *(
            guard.deployments.set_split(
                NAME, percent=i + 2, actor=f"writer-{i}", expected_revision=read
            )
            for i, guard in enumerate(writers)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, Conflict)]
    assert (len(wins), len(conflicts)) == (1, WRITERS - 1)
    final = await writers[0].deployments.get(NAME)
    assert final.revision == read + 1
    assert final == wins[0]
    assert (await writers[0].audit.verify()).ok


async def test_writers_without_a_precondition_all_apply_in_turn(writers: list[CanaryGuard]) -> None:
    read = (await writers[0].deployments.get(NAME)).revision
    await asyncio.gather(
        *(
            guard.deployments.set_split(NAME, percent=i + 2, actor=f"writer-{i}")
            for i, guard in enumerate(writers)
        )
    )
    assert (await writers[0].deployments.get(NAME)).revision == read + WRITERS
    audit = await writers[0].audit.list(deployment=NAME, limit=1000)
    splits = [a for a in audit if a.action == "deployment.split.change"]
    assert [a.revision_after for a in splits] == list(range(read + 1, read + WRITERS + 1))
    assert (await writers[0].audit.verify()).ok


async def test_concurrent_rollbacks_of_one_canary_apply_once(writers: list[CanaryGuard]) -> None:
    read = (await writers[0].deployments.get(NAME)).revision
    results = await asyncio.gather(
        *(
            guard.rollbacks.rollback(
                NAME, reason=f"writer {i}", actor=f"writer-{i}", expected_revision=read
            )
            for i, guard in enumerate(writers)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert (await writers[0].rollbacks.metrics(deployment=NAME)).total_rollbacks == 1
    assert (await writers[0].audit.verify()).ok


async def test_event_sequence_follows_revision_order_under_concurrency(
    writers: list[CanaryGuard],
) -> None:
    await asyncio.gather(
        *(
            guard.deployments.set_split(NAME, percent=i + 2, actor=f"writer-{i}")
            for i, guard in enumerate(writers)
        )
    )
    events = [
        e
        for e in await writers[0].events.read(deployment=NAME)
        if e.type == "io.canaryguard.split.changed"
    ]
    revisions = [e.revision or 0 for e in events]
    assert revisions == sorted(revisions)
