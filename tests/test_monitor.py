"""The monitor: judges active canaries on settled seconds and rolls back a bad one by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import canaryguard.engine.monitor as monitor_module
from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store.database import SqlStore
from canaryguard.adapters.store.schema import detector_checkpoints
from canaryguard.domain.errors import Conflict, NotFound
from canaryguard.domain.events import AutoRollbackTriggered, AutoRollbackVetoed, RegressionDetected
from canaryguard.domain.histogram import bucket_for
from canaryguard.domain.judge import RunCheckpoint
from canaryguard.domain.models import DeploymentState, RollbackKind, SnapshotKind
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.monitor import CHECKPOINT_SECONDS, MONITOR_ACTOR, Watch
from canaryguard.engine.unit import unit_of_work
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR, seed

NAME = "shop/security"


async def start(app: CanaryGuard, *, seeded: bool = False, **config: Any) -> int:
    if not seeded:
        await seed(app)
    if config:
        await app.deployments.configure(NAME, changes=config, actor=ACTOR)
    deployment = await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    return deployment.revision


async def record_second(
    app: CanaryGuard,
    *,
    revision: int,
    canary_errors: int,
    stable_errors: int = 9,
    canary_latency: float = 50.0,
    canary_requests: int = 100,
    stable_requests: int = 900,
) -> None:
    """One second (the clock's current one) of 900 stable and 100 canary requests."""
    at = app.ports.clock.now()
    for variant, requests, errors, latency in (
        ("stable", stable_requests, stable_errors, 50.0),
        ("canary", canary_requests, canary_errors, canary_latency),
    ):
        if not requests:
            continue
        await app.observations.record(
            NAME,
            variant,
            at=at,
            revision=revision,
            requests=requests,
            errors=errors,
            latency_sum_ms=requests * latency,
            latency_max_ms=latency,
            histogram={bucket_for(latency): requests},
        )


async def traffic(
    app: CanaryGuard,
    seconds: int,
    *,
    revision: int,
    canary_errors: int,
    stable_errors: int = 9,
    canary_latency: float = 50.0,
    canary_requests: int = 100,
    stable_requests: int = 900,
) -> list[Any]:
    """``seconds`` of 900 stable and 100 canary requests a second, ticking the monitor."""
    clock = app.ports.clock
    assert isinstance(clock, ManualClock)
    decisions = []
    for _ in range(seconds):
        await record_second(
            app,
            revision=revision,
            canary_errors=canary_errors,
            stable_errors=stable_errors,
            canary_latency=canary_latency,
            canary_requests=canary_requests,
            stable_requests=stable_requests,
        )
        clock.advance(1)
        decisions += await app.monitor.tick()
    return decisions


async def test_a_canary_with_three_times_the_errors_is_rolled_back_by_the_detector(
    app: CanaryGuard,
) -> None:
    revision = await start(app)  # 3 % errors stays under the 5 % threshold: the detector acts
    decisions = await traffic(app, 30, revision=revision, canary_errors=3)
    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.condition == "errors"
    assert "canary errors 3.00% vs stable 1.00%" in decision.reason
    deployment = await app.deployments.get(NAME)
    assert deployment.state is DeploymentState.ROLLED_BACK
    record = await app.rollbacks.get(decision.rollback_id or "")
    assert (record.kind, record.actor) == (RollbackKind.AUTO, MONITOR_ACTOR)
    assert record.trigger_metrics is not None
    assert record.trigger_metrics.canary.errors > 0


async def test_an_automatic_rollback_is_announced_snapshotted_and_audited(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    [decision] = await traffic(app, 30, revision=revision, canary_errors=3)
    events = await app.events.read(deployment=NAME)
    triggered = [e for e in events if e.type == "io.canaryguard.rollback.auto_triggered"]
    assert len(triggered) == 1
    event = triggered[0].event
    assert isinstance(event, AutoRollbackTriggered)
    assert "e-value" in event.reason
    snapshots = await app.snapshots.list(NAME)
    assert any(s.kind is SnapshotKind.BEFORE_ROLLBACK for s in snapshots)
    audit = await app.audit.list(deployment=NAME)
    assert any(r.actor == MONITOR_ACTOR and r.action.startswith("rollback") for r in audit)
    assert decision.rollback_id is not None


async def test_a_healthy_canary_is_left_alone(app: CanaryGuard) -> None:
    revision = await start(app)
    assert await traffic(app, 120, revision=revision, canary_errors=1) == []
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.verdict.kind.value in {"healthy", "inconclusive"}


async def test_an_incident_on_both_sides_is_not_blamed_on_the_canary(app: CanaryGuard) -> None:
    revision = await start(app, error_rate_threshold=0.5)  # the detector alone
    decisions = await traffic(app, 60, revision=revision, canary_errors=30, stable_errors=270)
    assert decisions == []


async def test_nothing_is_rolled_back_when_auto_rollback_is_disabled(app: CanaryGuard) -> None:
    revision = await start(app, auto_rollback_enabled=False)
    assert await traffic(app, 30, revision=revision, canary_errors=10) == []
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def regressions(app: CanaryGuard) -> list[RegressionDetected]:
    events = await app.events.read(deployment=NAME)
    return [e.event for e in events if isinstance(e.event, RegressionDetected)]


async def test_a_regression_with_auto_rollback_off_is_announced_once(app: CanaryGuard) -> None:
    revision = await start(app, auto_rollback_enabled=False)
    await traffic(app, 60, revision=revision, canary_errors=10)
    [announced] = await regressions(app)
    assert (announced.action, announced.condition) == (
        "auto_rollback_disabled",
        "ErrorRateExceeded",
    )
    assert "canary error rate 10.00% > 5.00%" in announced.reason
    assert announced.metrics is not None
    audit = await app.audit.list(deployment=NAME)
    assert any(r.action == "canary.regression_detected" for r in audit)


async def test_a_regression_waiting_for_its_veto_window_is_announced_at_once(
    app: CanaryGuard,
) -> None:
    revision = await start(app, veto_seconds=30)
    [pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    [announced] = await regressions(app)
    assert (announced.action, announced.veto_until) == ("veto_window", pending.veto_until)
    assert announced.reason == pending.reason


async def test_an_immediate_automatic_rollback_is_not_also_announced_as_a_regression(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    [decision] = await traffic(app, 30, revision=revision, canary_errors=10)
    assert decision.rollback_id is not None
    assert await regressions(app) == []


async def test_a_veto_is_an_event_naming_who_vetoed(app: CanaryGuard) -> None:
    revision = await start(app, veto_seconds=30)
    [pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    await app.monitor.veto(NAME, actor="alice")
    events = await app.events.read(deployment=NAME)
    [vetoed] = [e.event for e in events if isinstance(e.event, AutoRollbackVetoed)]
    assert (vetoed.vetoed_by, vetoed.reason) == ("alice", pending.reason)


async def test_warm_up_seconds_are_not_judged(app: CanaryGuard) -> None:
    revision = await start(app, warmup_seconds=60)  # 10 % errors: both detector and threshold
    assert await traffic(app, 40, revision=revision, canary_errors=10) == []
    [decision] = await traffic(app, 40, revision=revision, canary_errors=10)
    assert decision.rollback_id is not None


async def test_an_operator_can_veto_an_automatic_rollback_in_its_window(app: CanaryGuard) -> None:
    revision = await start(app, veto_seconds=30)
    [pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    assert pending.rollback_id is None
    assert pending.veto_until is not None
    vetoed = await app.monitor.veto(NAME, actor="alice")
    assert vetoed.vetoed_by == "alice"
    audit = await app.audit.list(deployment=NAME)
    assert any(r.action == "rollback.auto_vetoed" and r.actor == "alice" for r in audit)
    assert await traffic(app, 40, revision=revision, canary_errors=10) == []
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def test_without_a_veto_the_rollback_runs_when_the_window_ends(app: CanaryGuard) -> None:
    revision = await start(app, veto_seconds=10)
    decisions = await traffic(app, 45, revision=revision, canary_errors=10)
    assert [d.rollback_id is not None for d in decisions] == [False, True]
    assert (await app.deployments.get(NAME)).state is DeploymentState.ROLLED_BACK


async def test_a_veto_without_a_pending_rollback_is_refused(app: CanaryGuard) -> None:
    await start(app)
    with pytest.raises(NotFound, match="no automatic rollback"):
        await app.monitor.veto(NAME, actor="alice")


async def test_a_veto_after_its_window_is_refused(app: CanaryGuard) -> None:
    revision = await start(app, veto_seconds=30)
    [_pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    app.ports.clock.advance(31)  # type: ignore[attr-defined]
    with pytest.raises(Conflict, match=r"veto window .* ended"):
        await app.monitor.veto(NAME, actor="alice")


async def test_the_error_rate_threshold_fires_before_the_detector_on_a_gross_regression(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    [decision] = await traffic(app, 5, revision=revision, canary_errors=10)
    assert decision.condition == "ErrorRateExceeded"
    assert "canary error rate 10.00% > 5.00%" in decision.reason


async def test_a_threshold_condition_rolls_back_a_slow_canary(app: CanaryGuard) -> None:
    revision = await start(app, detector_enabled=False, response_time_threshold_ms=500)
    [decision] = await traffic(app, 10, revision=revision, canary_errors=1, canary_latency=900)
    assert decision.condition == "ResponseTimeExceeded"
    assert "canary mean latency 900 ms > 500 ms" in decision.reason


async def test_a_cel_condition_rolls_back_when_it_holds(app: CanaryGuard) -> None:
    revision = await start(
        app,
        detector_enabled=False,
        conditions=[
            {
                "kind": "cel",
                "expression": "canary.p99_ms > 1.5 * stable.p99_ms && canary.requests > 300.0",
            }
        ],
    )
    [decision] = await traffic(app, 10, revision=revision, canary_errors=1, canary_latency=200)
    assert decision.condition == "CustomConditionMet"
    assert "is true" in decision.reason


async def test_observations_from_before_the_canary_run_are_not_counted(app: CanaryGuard) -> None:
    revision = await start(app)
    await traffic(app, 5, revision=revision - 1, canary_errors=100)  # an older revision
    assert app.monitor.watch(NAME) is not None
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.detector.errors.canary_requests == 0


async def test_a_rolled_back_canary_is_not_judged_again(app: CanaryGuard) -> None:
    revision = await start(app)
    await traffic(app, 30, revision=revision, canary_errors=10)
    assert await traffic(app, 10, revision=revision, canary_errors=10) == []
    assert app.monitor.watch(NAME) is None


async def stable_alone(app: CanaryGuard, seconds: int, *, errors: tuple[int, ...] = (10,)) -> None:
    """``seconds`` of stable serving everyone (1,000 requests a second) before the canary, its
    errors per second cycling through ``errors`` block by block (10 s each)."""
    clock = app.ports.clock
    assert isinstance(clock, ManualClock)
    for second in range(seconds):
        await app.observations.record(
            NAME,
            "stable",
            at=clock.now(),
            revision=1,
            requests=1000,
            errors=errors[(second // 10) % len(errors)],
            latency_sum_ms=50_000.0,
            latency_max_ms=50.0,
            histogram={bucket_for(50.0): 1000},
        )
        clock.advance(1)


async def watch_after_stable_alone(
    app: CanaryGuard, seconds: int, *, errors: tuple[int, ...]
) -> Watch:
    """The watch of a canary started after ``seconds`` of stable alone, 4 s into its run."""
    await seed(app)
    await stable_alone(app, seconds, errors=errors)
    revision = await start(app, seeded=True)
    await traffic(app, 4, revision=revision, canary_errors=1)
    watch = app.monitor.watch(NAME)
    assert watch is not None
    return watch


async def test_the_detector_learns_stable_s_wobble_from_before_the_canary(
    app: CanaryGuard,
) -> None:
    watch = await watch_after_stable_alone(app, 120, errors=(5, 15))
    # the prior alone says 2.1; stable's rate jumping by half block to block says far more
    assert watch.judge.detector.errors.dispersion > 3


async def test_history_seconds_zero_leaves_the_detector_to_its_prior(app: CanaryGuard) -> None:
    await seed(app)
    await stable_alone(app, 120, errors=(5, 15))
    revision = await start(app, seeded=True, history_seconds=0)
    await traffic(app, 4, revision=revision, canary_errors=1)
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.detector.errors.dispersion == pytest.approx(2.1, abs=0.2)


@asynccontextmanager
async def restarted(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, path: Path
) -> AsyncIterator[CanaryGuard]:
    """Another process on the same database taking over (a restart, or a new leader)."""
    await app.observations.flush()
    guard = await open_canaryguard(Settings(data_dir=path, db_url=db_url), clock=clock, keys=keys)
    try:
        yield guard
    finally:
        await guard.close()


@asynccontextmanager
async def taken_over(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, path: Path
) -> AsyncIterator[tuple[Watch, Watch]]:
    """The run's watch in ``app`` and in another process that took it over and ticked once."""
    async with restarted(app, db_url, clock, keys, path) as again:
        await again.monitor.tick()
        before, after = app.monitor.watch(NAME), again.monitor.watch(NAME)
        assert before is not None
        assert after is not None
        yield before, after


async def test_a_restarted_monitor_carries_on_the_evidence_of_a_run_it_takes_over(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    await seed(app)
    await stable_alone(app, 60, errors=(5, 15))
    revision = await start(app, seeded=True)
    await traffic(app, 30, revision=revision, canary_errors=1)
    # a split change mid-run: a new revision, and a new state (scaling)
    changed = await app.deployments.set_split(NAME, percent=20, actor=ACTOR)
    await traffic(app, 30, revision=changed.revision, canary_errors=2)
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()
        # the seconds of both revisions (the last one or two have not settled)
        assert after.judge.detector.errors.canary_requests > 50 * 100


async def test_a_veto_holds_in_the_process_that_takes_the_run_over(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app, veto_seconds=30)
    await traffic(app, 30, revision=revision, canary_errors=10)
    await app.monitor.veto(NAME, actor="alice")
    async with restarted(app, db_url, clock, keys, tmp_path / "again") as again:
        assert await traffic(again, 60, revision=revision, canary_errors=10) == []
        watch = again.monitor.watch(NAME)
        assert watch is not None
        assert watch.decision is not None
        assert watch.decision.vetoed_by == "alice"
        assert (await again.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def test_a_detector_switched_on_mid_run_learns_stable_s_wobble_from_before_the_canary(
    app: CanaryGuard,
) -> None:
    await seed(app)
    await stable_alone(app, 120, errors=(5, 15))
    revision = await start(app, seeded=True, detector_enabled=False)
    await traffic(app, 4, revision=revision, canary_errors=1)
    await app.deployments.configure(NAME, changes={"detector_enabled": True}, actor=ACTOR)
    await traffic(app, 4, revision=revision, canary_errors=1)
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.detector.errors.dispersion > 3


async def test_the_dispersion_block_length_is_taken_from_the_deployment_s_config(
    app: CanaryGuard,
) -> None:
    revision = await start(app, dispersion_block_seconds=60)
    await traffic(app, 4, revision=revision, canary_errors=1)
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.detector.config.block_seconds == 60


async def checkpoint_of(app: CanaryGuard) -> RunCheckpoint | None:
    deployment = await app.deployments.get(NAME)
    async with app.ports.store.read() as tx:
        return await tx.checkpoints.get(deployment.baseline_snapshot_id or "")


async def test_the_monitor_saves_the_detector_of_a_run_every_so_many_judged_seconds(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    await traffic(app, 2 * CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    saved = await checkpoint_of(app)
    watch = app.monitor.watch(NAME)
    assert saved is not None
    assert watch is not None
    assert saved.next_second == watch.judge.started_at + 2 * CHECKPOINT_SECONDS
    assert saved.deployment == NAME


async def test_a_restarted_monitor_resumes_a_run_older_than_an_hour_from_its_checkpoint(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    for _ in range(4):  # over an hour without traffic (the monitor judges the gaps)
        clock.advance(1000)
        await app.monitor.tick()
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        # without the checkpoint it would judge the last hour only, not the first seconds
        assert after.judge.detector.states() == before.judge.detector.states()
        assert after.judge.detector.errors.canary_requests > 50 * 100


async def test_observations_late_for_a_second_judged_before_the_checkpoint_do_not_count(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    watch = app.monitor.watch(NAME)
    assert watch is not None
    judged = watch.judge.started_at + 5  # a second judged before the checkpoint
    await app.observations.record(
        NAME,
        "canary",
        at=datetime.fromtimestamp(judged, UTC),
        revision=revision,
        requests=100,
        errors=40,
        latency_sum_ms=5000.0,
        latency_max_ms=50.0,
        histogram={bucket_for(50.0): 100},
    )
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()


async def test_without_a_checkpoint_a_restarted_monitor_retraces_the_run(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    async with app.ports.store.write() as tx:
        await tx.checkpoints.prune(keep=set())
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()


async def test_a_checkpoint_that_does_not_fit_is_set_aside_and_the_run_retraced(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    saved = await checkpoint_of(app)
    assert saved is not None
    broken = replace(saved, next_second=saved.next_second + 1, detector={"version": 99})
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([broken])
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()


async def test_the_checkpoint_of_a_run_that_ended_is_dropped(app: CanaryGuard) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    assert await checkpoint_of(app) is not None
    run = (await app.deployments.get(NAME)).baseline_snapshot_id or ""
    await app.deployments.abort(NAME, reason="enough", actor=ACTOR)
    await app.monitor.tick()
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get(run) is None


async def test_a_resumed_run_s_conditions_see_the_same_evaluation_window(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        until = app.monitor.until(clock.now())
        assert after.judge.metrics(until) == before.judge.metrics(until)


async def test_a_resumed_detector_keeps_the_settings_its_run_started_with(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    await app.deployments.configure(NAME, changes={"alpha": 0.001}, actor=ACTOR)
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.config == before.judge.detector.config
        assert after.judge.detector.config.alpha == 0.01


async def test_a_fleet_whose_errors_swing_every_minute_is_judged_in_minute_blocks(
    app: CanaryGuard,
) -> None:
    watch = await watch_after_stable_alone(
        app, 3600, errors=(5,) * 6 + (15,) * 6
    )  # a minute low, a minute high
    assert watch.judge.detector.config.block_seconds == 60


async def test_a_fleet_whose_errors_wobble_every_ten_seconds_keeps_ten_second_blocks(
    app: CanaryGuard,
) -> None:
    watch = await watch_after_stable_alone(app, 3600, errors=(5, 15))
    assert watch.judge.detector.config.block_seconds == 10


async def test_a_checkpoint_that_is_not_json_is_set_aside_and_every_run_still_judged(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 10, revision=revision, canary_errors=1)
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(detector_checkpoints).values(body="{not json"))
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()


async def test_seconds_judged_with_the_detector_off_are_not_fed_to_it_after_a_restart(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    await app.deployments.configure(NAME, changes={"detector_enabled": False}, actor=ACTOR)
    await traffic(app, 20, revision=revision, canary_errors=1)
    await app.deployments.configure(NAME, changes={"detector_enabled": True}, actor=ACTOR)
    await traffic(app, 5, revision=revision, canary_errors=1)  # no regular save since
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.detector.states() == before.judge.detector.states()


async def test_a_run_followed_by_another_between_two_ticks_leaves_no_checkpoint(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    await traffic(app, CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    first = (await app.deployments.get(NAME)).baseline_snapshot_id or ""
    await app.deployments.abort(NAME, reason="again", actor=ACTOR)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    await app.monitor.tick()
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get(first) is None


async def test_a_resumed_run_keeps_the_start_second_it_was_judged_from(
    app: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    revision = await start(app)
    clock.advance(7200)  # first judged two hours in: from an hour back, not from the start
    await traffic(app, CHECKPOINT_SECONDS + 5, revision=revision, canary_errors=1)
    async with taken_over(app, db_url, clock, keys, tmp_path / "again") as (before, after):
        assert after.judge.started_at == before.judge.started_at
        until = app.monitor.until(clock.now())
        assert after.judge.metrics(until) == before.judge.metrics(until)


async def test_switching_automatic_rollback_off_in_the_veto_window_keeps_the_canary(
    app: CanaryGuard,
) -> None:
    revision = await start(app, veto_seconds=30)
    [pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    assert pending.rollback_id is None
    await app.deployments.configure(NAME, changes={"auto_rollback_enabled": False}, actor=ACTOR)
    assert await traffic(app, 40, revision=revision, canary_errors=10) == []
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def test_switching_automatic_rollback_on_again_runs_the_waiting_rollback(
    app: CanaryGuard,
) -> None:
    revision = await start(app, veto_seconds=30)
    await traffic(app, 30, revision=revision, canary_errors=10)
    await app.deployments.configure(NAME, changes={"auto_rollback_enabled": False}, actor=ACTOR)
    await traffic(app, 40, revision=revision, canary_errors=10)
    await app.deployments.configure(NAME, changes={"auto_rollback_enabled": True}, actor=ACTOR)
    [done] = await traffic(app, 1, revision=revision + 2, canary_errors=10)
    assert done.rollback_id is not None


async def test_a_veto_whose_audit_write_outlasts_the_window_stops_the_rollback(
    app: CanaryGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = await start(app, veto_seconds=30)
    [pending] = await traffic(app, 30, revision=revision, canary_errors=10)
    clock = app.ports.clock
    assert isinstance(clock, ManualClock)
    clock.advance((pending.veto_until - clock.now()).total_seconds() - 0.5)
    real = unit_of_work

    @asynccontextmanager
    async def slow_unit(ports: Any, actor: str) -> AsyncIterator[Any]:
        async with real(ports, actor) as unit:
            yield unit
            await asyncio.sleep(0.2)  # a database slow to take the veto's audit record

    monkeypatch.setattr(monitor_module, "unit_of_work", slow_unit)
    veto = asyncio.create_task(app.monitor.veto(NAME, actor="alice"))
    await asyncio.sleep(0)  # the veto is writing its audit record
    clock.advance(1)  # and the window ends meanwhile
    assert await app.monitor.tick() == []
    assert (await veto).vetoed_by == "alice"
    assert (await app.deployments.get(NAME)).state is DeploymentState.CANARY_ACTIVE


async def test_rollbacks_refused_at_every_tick_do_not_pile_up_as_decisions(
    app: CanaryGuard,
) -> None:
    revision = await start(app, confirmation_timeout_seconds=3_600)
    await app.rollbacks.request(NAME, reason="looking into it", actor="alice")
    await traffic(app, 60, revision=revision, canary_errors=10)  # refused: one is pending
    assert list(app.monitor.decisions) == []


async def test_raising_the_warm_up_mid_run_leaves_the_run_judged(app: CanaryGuard) -> None:
    revision = await start(app)
    await traffic(app, 3, revision=revision, canary_errors=1)
    await app.deployments.configure(NAME, changes={"warmup_seconds": 600}, actor=ACTOR)
    [decision] = await traffic(app, 30, revision=revision + 1, canary_errors=30)
    assert decision.rollback_id is not None


async def test_a_canary_brought_back_by_a_rollback_is_judged_as_a_new_run(
    app: CanaryGuard,
) -> None:
    revision = await start(app)
    [first] = await traffic(app, 30, revision=revision, canary_errors=3)
    rolled_back = await app.deployments.get(NAME)
    await traffic(app, 3, revision=rolled_back.revision, canary_errors=0, canary_requests=0)
    pre = (await app.rollbacks.get(first.rollback_id)).pre_snapshot_id
    back = await app.rollbacks.rollback(NAME, to=pre, reason="put the canary back", actor=ACTOR)
    restored = await app.deployments.get(NAME)
    assert restored.run_id == back.pre_snapshot_id != rolled_back.run_id
    # healthy now: the bad seconds of the run the snapshot was taken in are not judged again
    assert await traffic(app, 20, revision=restored.revision, canary_errors=1) == []
    watch = app.monitor.watch(NAME)
    assert watch is not None
    assert watch.judge.started_at >= int(restored.state_since.timestamp())


async def test_a_veto_does_not_carry_over_to_a_canary_brought_back(app: CanaryGuard) -> None:
    revision = await start(app, veto_seconds=30)
    await traffic(app, 30, revision=revision, canary_errors=10)
    await app.monitor.veto(NAME, actor="alice")
    record = await app.rollbacks.rollback(NAME, reason="by hand", actor=ACTOR)
    rolled_back = await app.deployments.get(NAME)
    await traffic(app, 3, revision=rolled_back.revision, canary_errors=0, canary_requests=0)
    await app.rollbacks.rollback(NAME, to=record.pre_snapshot_id, reason="look again", actor=ACTOR)
    restored = await app.deployments.get(NAME)
    decisions = await traffic(app, 60, revision=restored.revision, canary_errors=10)
    assert decisions  # judged afresh; rolled back once its new veto window ended
    assert (await app.deployments.get(NAME)).state is DeploymentState.ROLLED_BACK
