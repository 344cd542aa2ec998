"""Staged rollback with a simulated clock: the share at each stage, the events in order,
escalation, holds and timeouts, failures, and each stage applied exactly once."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.store import SqlStore
from canaryguard.adapters.store.schema import snapshots
from canaryguard.domain.errors import Conflict, IllegalTransition, RollbackFailedError
from canaryguard.domain.models import (
    DeploymentState,
    RollbackMode,
    RollbackStatus,
    StagedRollbackConfig,
)
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.executor import MAX_ATTEMPTS, plan
from tests.helpers import ACTOR, seed

NAME = "shop/security"
STAGES: dict[str, Any] = {
    "stages": [
        {"name": "half", "target_percentage": 50},
        {"name": "quarter", "target_percentage": 25},
        {"name": "tenth", "target_percentage": 10},
        {"name": "stable", "target_percentage": 0},
    ],
    "stage_interval_seconds": 30,
    "evaluate_between_stages": False,
}


async def start(app: CanaryGuard, percent: float = 30, **staged: Any) -> None:
    await seed(app)
    await app.deployments.configure(
        NAME, changes={"staged_rollback": {**STAGES, **staged}}, actor=ACTOR
    )
    await app.deployments.start_canary(NAME, policy="sec@2", percent=percent, actor=ACTOR)


def clock_of(app: CanaryGuard) -> ManualClock:
    clock = app.ports.clock
    assert isinstance(clock, ManualClock)
    return clock


async def share(app: CanaryGuard) -> float:
    return (await app.deployments.get(NAME)).split.canary_percent


def test_stages_at_or_above_the_current_share_are_skipped() -> None:
    config = StagedRollbackConfig.model_validate(STAGES)
    assert [s.name for s in plan(config, 30)] == ["quarter", "tenth", "stable"]
    assert [s.name for s in plan(config, 10)] == ["stable"]


async def test_a_staged_rollback_walks_the_share_down_stage_by_stage(app: CanaryGuard) -> None:
    await start(app)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    assert (record.mode, record.status) == (RollbackMode.STAGED, RollbackStatus.RUNNING)
    assert (await app.deployments.get(NAME)).state is DeploymentState.ROLLING_BACK
    shares = []
    for _ in range(2):
        await app.executor.step_due()
        shares.append(await share(app))
        assert await app.executor.step_due() == []  # the next step waits for its interval
        clock_of(app).advance(30)
    await app.executor.step_due()
    assert shares == [25, 10]
    deployment = await app.deployments.get(NAME)
    assert (deployment.state, deployment.canary) == (DeploymentState.ROLLED_BACK, None)
    done = await app.rollbacks.get(record.id)
    assert done.status is RollbackStatus.COMPLETED
    assert [s.revision is not None for s in done.stages] == [True, True, True]


async def test_the_events_come_in_order(app: CanaryGuard) -> None:
    await start(app)
    await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    for _ in range(3):
        await app.executor.step_due()
        clock_of(app).advance(30)
    types = [e.type.removeprefix("io.canaryguard.") for e in await app.events.read(deployment=NAME)]
    rollback = types[types.index("rollback.manual_initiated") :]
    assert [t for t in rollback if t.startswith("rollback.")] == [
        "rollback.manual_initiated",
        "rollback.progress",
        "rollback.progress",
        "rollback.progress",
        "rollback.completed",
    ]
    progress = [
        (e.event.stage, e.event.percentage)  # type: ignore[union-attr]
        for e in await app.events.read(deployment=NAME)
        if e.type == "io.canaryguard.rollback.progress"
    ]
    assert progress == [("quarter", 25), ("tenth", 10), ("stable", 0)]


async def test_other_changes_are_refused_while_it_rolls_back(app: CanaryGuard) -> None:
    await start(app)
    await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    with pytest.raises(IllegalTransition, match="rolling back"):
        await app.deployments.set_split(NAME, percent=50, actor=ACTOR)
    with pytest.raises(Conflict, match="still open"):
        await app.rollbacks.rollback(NAME, reason="again", actor=ACTOR)


async def test_a_step_is_taken_once_however_often_the_executor_looks(app: CanaryGuard) -> None:
    await start(app)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()
    await app.executor.step_due()
    await app.executor.step_due()
    done = await app.rollbacks.get(record.id)
    assert [s.applied_at is not None for s in done.stages] == [True, False, False]


async def observe_stable_errors(app: CanaryGuard, rate: float) -> None:
    now = clock_of(app).now()
    await app.observations.record(
        NAME, "stable", at=now, requests=1000, errors=int(1000 * rate),
        latency_sum_ms=1000.0, latency_max_ms=1.0,
    )  # fmt: skip


CRITERIA = [{"metric": "error_rate", "max_value": 0.05}]


async def test_failed_criteria_escalate_to_the_target_at_once(app: CanaryGuard) -> None:
    stages = [{**stage, "success_criteria": CRITERIA} for stage in STAGES["stages"]]
    await start(app, stages=stages, evaluate_between_stages=True)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()  # quarter
    await observe_stable_errors(app, 0.2)
    clock_of(app).advance(30)
    await app.executor.step_due()  # the quarter stage failed: escalate
    done = await app.rollbacks.get(record.id)
    assert done.status is RollbackStatus.COMPLETED
    assert done.error is not None
    assert "criteria failed: stage quarter: stable error_rate" in done.error
    assert (await app.deployments.get(NAME)).state is DeploymentState.ROLLED_BACK


async def test_a_hold_waits_then_escalates_when_the_stage_times_out(app: CanaryGuard) -> None:
    stages = [
        {**stage, "success_criteria": CRITERIA, "max_duration_seconds": 60}
        for stage in STAGES["stages"]
    ]
    await start(app, stages=stages, evaluate_between_stages=True, on_criteria_failure="hold")
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()  # quarter
    await observe_stable_errors(app, 0.2)
    clock_of(app).advance(30)
    await app.executor.step_due()
    held = await app.rollbacks.get(record.id)
    assert held.status is RollbackStatus.RUNNING
    assert held.held is not None
    assert "stage quarter" in held.held
    assert await share(app) == 25
    clock_of(app).advance(31)
    await observe_stable_errors(app, 0.2)
    await app.executor.step_due()
    done = await app.rollbacks.get(record.id)
    assert done.status is RollbackStatus.COMPLETED
    assert done.error is not None
    assert "stage timeout" in done.error


async def test_the_total_timeout_escalates(app: CanaryGuard) -> None:
    await start(app, total_timeout_seconds=40)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()
    clock_of(app).advance(45)
    await app.executor.step_due()
    done = await app.rollbacks.get(record.id)
    assert done.status is RollbackStatus.COMPLETED
    assert done.error == "escalated: total timeout reached"


async def test_an_operator_may_replace_it_with_an_immediate_rollback(app: CanaryGuard) -> None:
    await start(app)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()
    done = await app.executor.replace_with_immediate(record.id, reason="too slow", actor="bob")
    assert done.status is RollbackStatus.COMPLETED
    assert (await app.deployments.get(NAME)).state is DeploymentState.ROLLED_BACK


async def test_a_step_that_keeps_failing_fails_the_rollback_and_the_deployment(
    app: CanaryGuard,
) -> None:
    await start(app)
    record = await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    await app.executor.step_due()  # quarter applied
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:  # the target cannot be opened any more
        await conn.execute(
            snapshots.update()
            .where(snapshots.c.id == record.target_snapshot_id)
            .values(blob=sa.literal(b"\x00" * 64))
        )
    for _ in range(MAX_ATTEMPTS + 1):
        clock_of(app).advance(120)
        await app.executor.step_due()
    failed = await app.rollbacks.get(record.id)
    assert failed.status is RollbackStatus.FAILED
    assert failed.error is not None
    assert "does not authenticate" in failed.error
    assert 0 < failed.partial_completion < 1
    deployment = await app.deployments.get(NAME)
    assert deployment.state is DeploymentState.FAILED
    assert deployment.state_reason is not None
    assert record.id in deployment.state_reason
    types = [e.type for e in await app.events.read(deployment=NAME)]
    assert types[-1] == "io.canaryguard.rollback.failed"
    assert (await app.audit.verify()).ok


async def test_a_start_whose_target_cannot_be_opened_is_recorded_as_failed_and_changes_nothing(
    app: CanaryGuard,
) -> None:
    await start(app)
    before = await app.deployments.get(NAME)
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(
            snapshots.update()
            .where(snapshots.c.id == before.baseline_snapshot_id)
            .values(blob=sa.literal(b"\x00" * 64))
        )
    with pytest.raises(RollbackFailedError, match="does not authenticate") as caught:
        await app.executor.start(NAME, reason="errors up", actor=ACTOR)
    failed = await app.rollbacks.get(caught.value.rollback_id)
    assert (failed.status, failed.mode) == (RollbackStatus.FAILED, RollbackMode.STAGED)
    assert failed.target_snapshot_id == before.baseline_snapshot_id
    after = await app.deployments.get(NAME)
    assert (after.revision, after.state, after.split) == (
        before.revision,
        before.state,
        before.split,
    )
    types = [e.type for e in await app.events.read(deployment=NAME)]
    assert types[-1] == "io.canaryguard.rollback.failed"
    assert (await app.audit.verify()).ok


async def test_a_confirmed_staged_rollback_runs_in_stages(app: CanaryGuard) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice", staged=True)
    running = await app.rollbacks.confirm(pending.id, actor="bob")
    assert (running.id, running.status, running.confirmed_by) == (
        pending.id,
        RollbackStatus.RUNNING,
        "bob",
    )
    await app.executor.step_due()
    assert await share(app) == 25


async def test_a_canary_a_staged_rollback_brings_back_is_a_new_run(app: CanaryGuard) -> None:
    await start(app, percent=10)
    kept = await app.snapshots.create(NAME, note="the canary at 10 %", actor=ACTOR)
    await app.deployments.set_split(NAME, percent=60, actor=ACTOR)
    record = await app.executor.start(NAME, to=kept.id, reason="back to 10 %", actor=ACTOR)
    for _ in range(5):
        await app.executor.step_due()
        clock_of(app).advance(30)
    restored = await app.deployments.get(NAME)
    assert (restored.state, await share(app)) == (DeploymentState.CANARY_ACTIVE, 10)
    assert restored.run_id == f"{record.id}/restored"
    assert restored.baseline_snapshot_id == kept.baseline_snapshot_id
