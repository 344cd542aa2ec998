"""Recording outcomes: validated, merged per second, summarised over the window."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import SqlStore
from canaryguard.adapters.store.database import migration_config
from canaryguard.adapters.store.schema import observation_rollups
from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import InvalidInput, NotFound
from canaryguard.domain.models import Observation
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import seed

NAME = "shop/security"


async def test_observations_merge_per_second_and_summarise(app: CanaryGuard) -> None:
    await seed(app)
    now = app.ports.clock.now()
    for _ in range(2):
        await app.observations.record(
            NAME,
            Variant.CANARY,
            at=now,
            requests=10,
            errors=1,
            latency_sum_ms=100,
            latency_max_ms=30,
        )
    summary = await app.observations.summary(NAME)
    assert (summary.canary.requests, summary.canary.errors, summary.canary.latency_max_ms) == (
        20,
        2,
        30,
    )
    assert summary.canary.error_rate == 0.1
    assert summary.stable.requests == 0


async def test_observations_outside_the_window_do_not_count(app: CanaryGuard) -> None:
    await seed(app)
    await app.observations.record(
        NAME,
        "stable",
        at=app.ports.clock.now(),
        requests=5,
        errors=0,
        latency_sum_ms=5,
        latency_max_ms=1,
    )
    app.ports.clock.advance(5 * 60 + 1)  # type: ignore[attr-defined]
    assert (await app.observations.summary(NAME)).stable.requests == 0


@pytest.mark.parametrize(
    ("requests", "errors", "latency", "message"),
    [
        (1, 2, 1.0, "errors .2. exceed requests .1."),
        (-1, 0, 1.0, "requests: Input should be greater than or equal to 0"),
        (1, 0, math.inf, "latency_sum_ms: Input should be a finite number"),
        (1, 0, math.nan, "latency_sum_ms: Input should be a finite number"),
        (1, 0, -1.0, "latency_sum_ms: Input should be greater than or equal to 0"),
    ],
)
async def test_bad_observations_are_refused(
    app: CanaryGuard, requests: int, errors: int, latency: float, message: str
) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match=message):
        await app.observations.record(
            NAME, "canary", at=app.ports.clock.now(), requests=requests, errors=errors,
            latency_sum_ms=latency, latency_max_ms=latency,
        )  # fmt: skip


async def test_observation_for_an_unknown_deployment_is_refused(app: CanaryGuard) -> None:
    with pytest.raises(NotFound):
        await app.observations.record(
            "ghost",
            "canary",
            at=app.ports.clock.now(),
            requests=1,
            errors=0,
            latency_sum_ms=1,
            latency_max_ms=1,
        )


async def test_unknown_variant_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match="variant: Input should be 'stable' or 'canary'"):
        await app.observations.record(
            NAME,
            "blue",
            at=app.ports.clock.now(),
            requests=1,
            errors=0,
            latency_sum_ms=1,
            latency_max_ms=1,
        )


def observation(second: int, **changes: object) -> Observation:
    values: dict[str, object] = {
        "deployment": NAME, "variant": "canary", "second": second, "requests": 10, "errors": 1,
        "latency_sum_ms": 100.0, "latency_max_ms": 30.0, "histogram": {24: 4, 30: 6},
    }  # fmt: skip
    values.update(changes)
    return Observation.model_validate(values)


async def test_a_batch_is_merged_once_however_often_it_is_retried(app: CanaryGuard) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    batch = [observation(now), observation(now - 1)]
    first = await app.observations.ingest(batch, batch_id="b-1")
    again = await app.observations.ingest(batch, batch_id="b-1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (await app.observations.summary(NAME)).canary.requests == 20


async def test_one_bad_entry_refuses_the_whole_batch_naming_it(app: CanaryGuard) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    with pytest.raises(InvalidInput, match="observation 1: second"):
        await app.observations.ingest([observation(now), observation(now - 8 * 86_400)])
    assert (await app.observations.summary(NAME)).canary.requests == 0


async def test_unknown_deployment_in_a_batch_refuses_it(app: CanaryGuard) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    with pytest.raises(NotFound, match="'ghost'"):
        await app.observations.ingest([observation(now), observation(now, deployment="ghost")])
    assert (await app.observations.summary(NAME)).canary.requests == 0


async def test_a_histogram_that_does_not_add_up_to_requests_is_refused(
    app: CanaryGuard,
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    with pytest.raises(InvalidInput, match="observation 1: histogram counts must add up"):
        await app.observations.ingest([observation(now), observation(now, histogram={3: 2})])
    assert (await app.observations.summary(NAME)).canary.requests == 0


def test_histogram_buckets_are_bounded() -> None:
    with pytest.raises(ValueError, match="less than or equal to 200"):
        observation(0, histogram={999: 10})


async def test_a_flush_appends_one_row_per_key_with_revision_and_histogram(
    app: CanaryGuard,
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now, revision=2), observation(now, revision=2)])
    assert await app.observations.flush() == 1
    assert await app.observations.flush() == 0  # nothing new
    store = app.ports.store
    assert isinstance(store, SqlStore)
    c = observation_rollups.c
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(c.revision, c.requests, c.histogram))).all()
    assert [(r.revision, r.requests, json.loads(r.histogram)) for r in rows] == [
        (2, 20, {"24": 8, "30": 12})
    ]


async def stored_requests(app: CanaryGuard) -> int:
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.connect() as conn:
        total = (
            await conn.execute(sa.select(sa.func.sum(observation_rollups.c.requests)))
        ).scalar()
    return int(total or 0)


def failing_writes(monkeypatch: pytest.MonkeyPatch, app: CanaryGuard, *, committed: bool) -> None:
    """The store's next writes fail: after their commit (the connection dropped before the
    answer came back) when ``committed``, else before it (rolled back)."""
    store = app.ports.store
    assert isinstance(store, SqlStore)
    real = store.write

    @contextlib.asynccontextmanager
    async def write(*, exclusive: bool = True) -> AsyncIterator[Any]:
        async with real(exclusive=exclusive) as tx:
            yield tx
            if not committed:
                raise OSError("connection lost before the commit")
        raise OSError("connection lost after the commit")

    monkeypatch.setattr(store, "write", write)


@pytest.mark.parametrize("committed", [True, False], ids=["after-commit", "before-commit"])
async def test_a_failed_flush_is_written_exactly_once_when_retried(
    app: CanaryGuard, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now)])
    with monkeypatch.context() as patched:
        failing_writes(patched, app, committed=committed)
        with pytest.raises(OSError, match="connection lost"):
            await app.observations.flush()
    await app.observations.ingest([observation(now + 1)])  # more, while the retry waits
    await app.observations.flush()
    assert await stored_requests(app) == 20  # each observation once
    assert await app.observations.flush() == 0


async def test_a_flush_that_keeps_failing_loses_nothing(
    app: CanaryGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now)])
    with monkeypatch.context() as patched:
        failing_writes(patched, app, committed=False)
        for _ in range(3):
            await app.observations.ingest([observation(now)])
            with pytest.raises(OSError, match="connection lost"):
                await app.observations.flush()
    await app.observations.flush()
    assert await stored_requests(app) == 40


async def test_summary_has_percentiles_from_the_histograms(app: CanaryGuard) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now, histogram={24: 6, 30: 4})])
    canary = (await app.observations.summary(NAME)).canary
    # upper bucket edges: bucket 24 is [1.1**24, 1.1**25) ms
    assert canary.p50_ms == pytest.approx(1.1**25)
    assert canary.p90_ms == pytest.approx(1.1**31)
    assert canary.p99_ms == pytest.approx(1.1**31)


async def test_a_restarted_server_has_the_flushed_observations_and_batch_ids(
    db_url: str, tmp_path: Path, clock: ManualClock, keys: AesGcmKeyRing
) -> None:
    settings = Settings(data_dir=tmp_path / "data", db_url=db_url)
    first = await open_canaryguard(settings, clock=clock, keys=keys)
    try:
        await seed(first)
        now = int(clock.now().timestamp())
        await first.observations.ingest([observation(now)], batch_id="b-restart")
    finally:
        await first.close()  # flushes
    second = await open_canaryguard(settings, clock=clock, keys=keys)
    try:
        again = await second.observations.ingest([observation(now)], batch_id="b-restart")
        assert again.duplicate
        assert (await second.observations.summary(NAME)).canary.requests == 10
    finally:
        await second.close()


async def test_migration_0006_goes_down_with_the_data_and_up_again(app: CanaryGuard) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now, revision=2), observation(now, revision=3)])
    await app.observations.flush()
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(migration_config(c), "0005"))
        old = (await conn.execute(sa.text("SELECT requests, errors FROM observations"))).all()
        buckets = (
            await conn.execute(sa.text("SELECT bucket, count FROM observation_buckets"))
        ).all()
        await conn.run_sync(lambda c: command.upgrade(migration_config(c), "head"))
        c = observation_rollups.c
        again = (await conn.execute(sa.select(c.revision, c.requests, c.histogram))).all()
    assert [tuple(row) for row in old] == [(20, 2)]  # the two revisions summed
    assert sorted(tuple(row) for row in buckets) == [(24, 8), (30, 12)]
    assert [(r.revision, r.requests, json.loads(r.histogram)) for r in again] == [
        (0, 20, {"24": 8, "30": 12})
    ]


async def test_a_replica_merges_what_another_flushed(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now), observation(now - 1)])
    await app.observations.flush()
    merged = await other_replica.observations.follow()
    assert merged == 2
    assert await other_replica.observations.summary(NAME) == await app.observations.summary(NAME)


async def test_following_again_merges_nothing_twice(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await seed(app)
    now = int(app.ports.clock.now().timestamp())
    await app.observations.ingest([observation(now)])
    await app.observations.flush()
    await other_replica.observations.follow()
    assert await other_replica.observations.follow() == 0
    await app.observations.ingest([observation(now)])
    await app.observations.flush()
    await other_replica.observations.follow()
    assert (await other_replica.observations.summary(NAME)).canary.requests == 20


async def test_a_replica_does_not_merge_its_own_rows_again(app: CanaryGuard) -> None:
    await seed(app)
    await app.observations.ingest([observation(int(app.ports.clock.now().timestamp()))])
    await app.observations.flush()
    assert await app.observations.follow() == 0
    assert (await app.observations.summary(NAME)).canary.requests == 10


async def test_a_replica_started_later_counts_earlier_rows_once(
    app: CanaryGuard, db_url: str, tmp_path: Path, clock: ManualClock, keys: AesGcmKeyRing
) -> None:
    await seed(app)
    await app.observations.ingest([observation(int(clock.now().timestamp()))])
    await app.observations.flush()
    late = await open_canaryguard(
        Settings(data_dir=tmp_path / "late", db_url=db_url), clock=clock, keys=keys
    )
    try:
        await late.observations.follow()  # what load() read is not merged again
        assert (await late.observations.summary(NAME)).canary.requests == 10
    finally:
        await late.close()
