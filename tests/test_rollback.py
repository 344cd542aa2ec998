"""Immediate rollback: targets, atomicity, failure records, refusals, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from canaryguard.adapters.store import SqlStore
from canaryguard.adapters.store.schema import snapshots
from canaryguard.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RollbackFailedError,
)
from canaryguard.domain.models import (
    DeploymentState,
    RollbackKind,
    RollbackRecord,
    RollbackStatus,
    SnapshotKind,
)
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.ports import Store, Transaction
from canaryguard.engine.unit import Ports
from tests.helpers import ACTOR, seed

NAME = "shop/security"


async def start(app: CanaryGuard, percent: float = 10) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=percent, actor=ACTOR)


async def test_rollback_returns_to_the_state_before_the_canary(app: CanaryGuard) -> None:
    await start(app)
    record = await app.rollbacks.rollback(NAME, reason="errors up", actor="alice")
    after = await app.deployments.get(NAME)
    assert (str(after.stable), after.canary, after.split.canary_basis_points) == ("sec@1", None, 0)
    assert (after.state, after.state_reason, after.revision) == (
        DeploymentState.ROLLED_BACK,
        "errors up",
        3,
    )
    assert (record.status, record.kind, record.actor, record.revision_after) == (
        RollbackStatus.COMPLETED,
        RollbackKind.MANUAL,
        "alice",
        3,
    )


async def test_rollback_takes_a_pre_rollback_snapshot_of_the_canary(app: CanaryGuard) -> None:
    await start(app, percent=25)
    record = await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    assert record.pre_snapshot_id is not None
    pre = await app.snapshots.get(record.pre_snapshot_id)
    assert (pre.kind, pre.split.canary_basis_points, pre.revision) == (
        SnapshotKind.BEFORE_ROLLBACK,
        2500,
        2,
    )


async def test_rollback_to_a_snapshot_restores_it_exactly(app: CanaryGuard) -> None:
    await start(app, percent=5)
    await app.deployments.set_split(NAME, percent=20, canary_groups=["qa"], actor=ACTOR)
    mid = await app.snapshots.create(NAME, actor=ACTOR, note="at 20 %")
    await app.deployments.set_split(NAME, percent=60, actor=ACTOR)
    await app.rollbacks.rollback(NAME, to=mid.id, reason="back to 20 %", actor=ACTOR)
    after = await app.deployments.get(NAME)
    assert (after.split, after.canary, after.stable) == (
        mid.split,
        mid.canary.ref if mid.canary else None,
        mid.stable.ref,
    )
    assert after.state is DeploymentState.CANARY_ACTIVE


async def test_rollback_after_promotion_returns_to_the_previous_stable(app: CanaryGuard) -> None:
    await start(app)
    await app.deployments.promote(NAME, actor=ACTOR)
    await app.rollbacks.rollback(NAME, reason="v2 hurts at 100 %", actor=ACTOR)
    assert str((await app.deployments.get(NAME)).stable) == "sec@1"


async def test_rollback_writes_events_in_order_and_one_audit_record(app: CanaryGuard) -> None:
    await start(app)
    seen_before = (await app.events.read())[-1].seq
    record = await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    types = [e.type for e in await app.events.read(after_seq=seen_before)]
    assert types == [
        "io.canaryguard.snapshot.created",
        "io.canaryguard.rollback.manual_initiated",
        "io.canaryguard.rollback.completed",
    ]
    entry = (await app.audit.list())[-1]
    assert (
        entry.action,
        entry.details["rollback_id"],
        entry.revision_before,
        entry.revision_after,
    ) == (
        "rollback.execute",
        record.id,
        2,
        3,
    )


async def test_auto_rollback_emits_auto_triggered_with_its_metrics(app: CanaryGuard) -> None:
    await start(app)
    record = await app.rollbacks.rollback(
        NAME, reason="detector", actor="monitor", kind=RollbackKind.AUTO
    )
    events = await app.events.read(deployment=NAME)
    triggered = [e for e in events if e.type == "io.canaryguard.rollback.auto_triggered"]
    assert len(triggered) == 1
    assert triggered[0].to_cloudevent()["data"]["snapshot_id"] == record.pre_snapshot_id


async def test_rollback_bumps_the_event_published_to_subscribers(app: CanaryGuard) -> None:
    await start(app)
    subscription = app.ports.bus.subscribe()
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    got = [await subscription.get() for _ in range(3)]
    assert got[-1].type == "io.canaryguard.rollback.completed"


async def test_rollback_without_a_canary_or_target_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match="no canary to roll back"):
        await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    assert await app.rollbacks.list() == []


async def test_rollback_needs_a_reason(app: CanaryGuard) -> None:
    await start(app)
    with pytest.raises(InvalidInput, match="reason is required"):
        await app.rollbacks.rollback(NAME, reason="", actor=ACTOR)


async def test_rollback_to_an_unknown_snapshot_is_refused_and_not_recorded(
    app: CanaryGuard,
) -> None:
    await start(app)
    with pytest.raises(NotFound, match="no snapshot 'snap-missing'"):
        await app.rollbacks.rollback(NAME, to="snap-missing", reason="r", actor=ACTOR)
    assert await app.rollbacks.list() == []
    assert (await app.deployments.get(NAME)).revision == 2


async def test_rollback_to_another_deployments_snapshot_is_refused(app: CanaryGuard) -> None:
    await start(app)
    await app.deployments.create("other/app", stable="sec@1", actor=ACTOR)
    foreign = await app.snapshots.create("other/app", actor=ACTOR)
    with pytest.raises(InvalidInput, match="belongs to other/app"):
        await app.rollbacks.rollback(NAME, to=foreign.id, reason="r", actor=ACTOR)


async def test_rollback_with_a_stale_revision_is_a_conflict(app: CanaryGuard) -> None:
    await start(app)
    with pytest.raises(Conflict):
        await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR, expected_revision=1)


class _FailingRollbacks:
    """Passes everything through, but refuses to store a completed rollback record."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def insert(self, record: RollbackRecord) -> None:
        if record.status is RollbackStatus.COMPLETED:
            raise OSError("disk full while writing the rollback record")
        await self._inner.insert(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FailingTx:
    def __init__(self, inner: Transaction) -> None:
        self._inner = inner
        self.rollbacks = _FailingRollbacks(inner.rollbacks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FailingStore:
    """A store whose write transactions fail at the very end of a rollback."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def read(self) -> Any:
        return self._inner.read()

    @asynccontextmanager
    async def write(self, *, exclusive: bool = True) -> AsyncIterator[Any]:
        async with self._inner.write(exclusive=exclusive) as tx:
            yield _FailingTx(tx)

    async def close(self) -> None:
        await self._inner.close()


async def test_failure_inside_the_transaction_changes_nothing_and_is_recorded(
    app: CanaryGuard,
) -> None:
    await start(app)
    before = await app.deployments.get(NAME)
    snapshots_before = await app.snapshots.list(NAME)
    faulty = CanaryGuard(
        Ports(
            store=_FailingStore(app.ports.store),
            bus=app.ports.bus,
            clock=app.ports.clock,
            keys=app.ports.keys,
        )
    )
    with pytest.raises(RollbackFailedError, match="disk full") as caught:
        await faulty.rollbacks.rollback(NAME, reason="bad canary", actor=ACTOR)
    assert await app.deployments.get(NAME) == before
    assert await app.snapshots.list(NAME) == snapshots_before  # the pre-rollback snapshot went too
    failed = await app.rollbacks.get(caught.value.rollback_id)
    assert (failed.status, failed.partial_completion, failed.revision_after) == (
        RollbackStatus.FAILED,
        0.0,
        None,
    )
    assert "disk full" in (failed.error or "")


async def test_failed_rollback_emits_rollback_failed_and_is_audited(app: CanaryGuard) -> None:
    await start(app)
    faulty = CanaryGuard(
        Ports(
            store=_FailingStore(app.ports.store),
            bus=app.ports.bus,
            clock=app.ports.clock,
            keys=app.ports.keys,
        )
    )
    with pytest.raises(RollbackFailedError):
        await faulty.rollbacks.rollback(NAME, reason="bad canary", actor=ACTOR)
    types = [e.type for e in await app.events.read(deployment=NAME)]
    assert types[-1] == "io.canaryguard.rollback.failed"
    assert "io.canaryguard.rollback.completed" not in types
    assert (await app.audit.list())[-1].action == "rollback.failed"
    assert (await app.audit.verify()).ok


async def test_rollback_to_a_tampered_snapshot_fails_and_is_recorded(app: CanaryGuard) -> None:

    await start(app)
    baseline = (await app.deployments.get(NAME)).baseline_snapshot_id
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(
            snapshots.update()
            .where(snapshots.c.id == baseline)
            .values(blob=sa.literal(b"\x00" * 64))
        )
    with pytest.raises(RollbackFailedError, match="does not authenticate"):
        await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    assert (await app.rollbacks.metrics(deployment=NAME)).failed_rollbacks == 1
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def test_metrics_count_every_kind_and_outcome(app: CanaryGuard) -> None:
    await start(app)
    await app.rollbacks.rollback(NAME, reason="one", actor=ACTOR, kind=RollbackKind.AUTO)
    app.ports.clock.advance(5)  # type: ignore[attr-defined]
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    await app.rollbacks.rollback(NAME, reason="two", actor=ACTOR)
    metrics = await app.rollbacks.metrics()
    assert (
        metrics.total_rollbacks,
        metrics.auto_rollbacks,
        metrics.manual_rollbacks,
        metrics.successful_rollbacks,
        metrics.failed_rollbacks,
    ) == (2, 1, 1, 2, 0)
    assert metrics.last_rollback_time == app.ports.clock.now()
    assert metrics.avg_rollback_duration_ms is not None


async def test_metrics_per_deployment_only_count_that_deployment(app: CanaryGuard) -> None:
    await start(app)
    await app.rollbacks.rollback(NAME, reason="one", actor=ACTOR)
    await app.deployments.create("other/app", stable="sec@1", actor=ACTOR)
    assert (await app.rollbacks.metrics(deployment="other/app")).total_rollbacks == 0
    assert (await app.rollbacks.metrics(deployment=NAME)).total_rollbacks == 1


async def test_rolled_back_deployment_can_start_a_new_canary(app: CanaryGuard) -> None:
    await start(app)
    await app.rollbacks.rollback(NAME, reason="r", actor=ACTOR)
    again = await app.deployments.start_canary(NAME, policy="sec@2", percent=1, actor=ACTOR)
    assert again.state is DeploymentState.CANARY_ACTIVE


async def test_a_rollback_bringing_back_a_canary_whose_baseline_was_pruned_is_refused(
    app: CanaryGuard,
) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 2}, actor=ACTOR)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    during = await app.snapshots.create(NAME, actor=ACTOR, note="during", pinned=True)
    await app.deployments.abort(NAME, reason="stop", actor=ACTOR)
    for _ in range(2):  # retention drops the aborted canary's baseline
        await app.snapshots.create(NAME, actor=ACTOR)
    before = await app.deployments.get(NAME)
    with pytest.raises(InvalidInput, match=r"baseline snapshot .* was pruned"):
        await app.rollbacks.rollback(NAME, reason="back", actor=ACTOR, to=during.id)
    assert (await app.deployments.get(NAME)).revision == before.revision
