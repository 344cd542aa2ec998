"""Several replicas on one database: exactly one holds the controller lease and acts; the others
take over when it lapses, and a replica whose lease lapsed cannot act (fencing). Invariant 5."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.domain.errors import NotLeader
from canaryguard.domain.models import DeploymentState, RollbackKind, RollbackStatus
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.executor import EXECUTOR_ACTOR
from canaryguard.engine.leadership import TTL
from canaryguard.engine.monitor import MONITOR_ACTOR
from canaryguard.engine.unit import unit_of_work
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR
from tests.servers import RunningServer, server_process
from tests.test_monitor import NAME, record_second, start

LAPSE = TTL.total_seconds() + 1


async def test_the_first_replica_to_claim_leads_and_the_other_does_not(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    assert await app.lead().hold() is True
    assert await other_replica.lead().hold() is False
    assert (app.lead().is_leader, other_replica.lead().is_leader) == (True, False)


async def test_renewing_the_lease_keeps_its_epoch(app: CanaryGuard, clock: ManualClock) -> None:
    leadership = app.lead()
    await leadership.hold()
    clock.advance(LAPSE)  # even late, the holder keeps its epoch while no one took over
    await leadership.hold()
    assert leadership.epoch == 1


async def test_an_expired_lease_is_taken_over_with_a_higher_epoch(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    await app.lead().hold()
    clock.advance(LAPSE)
    assert await other_replica.lead().hold() is True
    assert other_replica.lead().epoch == 2
    assert await app.lead().hold() is False


async def test_a_replica_whose_lease_was_taken_over_cannot_roll_back(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    await start(app)
    await app.lead().hold()
    clock.advance(LAPSE)
    await other_replica.lead().hold()
    before = await app.deployments.get(NAME)
    with pytest.raises(NotLeader, match="held by"):
        await app.rollbacks.rollback(
            NAME, reason="stale leader", actor=MONITOR_ACTOR, kind=RollbackKind.AUTO
        )
    assert await app.deployments.get(NAME) == before
    assert await app.rollbacks.list(deployment=NAME) == []


async def test_an_operator_may_act_on_any_replica(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await start(app)
    await app.lead().hold()
    other_replica.lead()
    record = await other_replica.rollbacks.rollback(NAME, reason="by hand", actor=ACTOR)
    assert record.status is RollbackStatus.COMPLETED


async def test_a_controller_change_without_any_lease_is_refused(app: CanaryGuard) -> None:
    app.lead()  # leading is asked for, but never claimed
    with pytest.raises(NotLeader, match="not held"):
        async with unit_of_work(app.ports, EXECUTOR_ACTOR):
            pass


async def test_only_the_leading_replica_rolls_a_bad_canary_back(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    revision = await start(app)
    other_replica.lead()
    await other_replica.monitor.tick()  # the first replica to tick claims the lease
    app.lead()
    follower_decisions = []
    for _ in range(30):  # the same bad traffic reaches both; each ticks its monitor every second
        for guard in (app, other_replica):
            await record_second(guard, revision=revision, canary_errors=5)
        clock.advance(1)
        follower_decisions += await app.monitor.tick()
        await other_replica.monitor.tick()
    deployment = await app.deployments.get(NAME)
    assert deployment.state is DeploymentState.ROLLED_BACK
    assert follower_decisions == []
    assert len(other_replica.monitor.decisions) == 1
    assert [r.actor for r in await app.rollbacks.list(deployment=NAME)] == [MONITOR_ACTOR]


async def test_a_follower_executor_leaves_due_steps_to_the_leader(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    await start(app)
    await app.deployments.configure(
        NAME,
        changes={"staged_rollback": {"stages": [{"name": "stable", "target_percentage": 0}]}},
        actor=ACTOR,
    )
    await app.lead().hold()
    other_replica.lead()
    record = await other_replica.executor.start(NAME, reason="in stages", actor=ACTOR)
    clock.advance(60)
    await app.lead().hold()  # renewed by the leader's monitor tick, every second in a server
    assert await other_replica.executor.step_due() == []
    stepped = await app.executor.step_due()
    assert [r.id for r in stepped] == [record.id]


async def test_a_clean_stop_hands_the_lease_over_at_once(
    db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path, other_replica: CanaryGuard
) -> None:
    first = await open_canaryguard(
        Settings(data_dir=tmp_path / "first", db_url=db_url), clock=clock, keys=keys
    )
    await first.lead().hold()
    await first.close()
    assert await other_replica.lead().hold() is True
    assert other_replica.lead().epoch == 2


def leads(server: RunningServer) -> bool:
    with server.client() as client:
        return "canaryguard_controller_leader 1.0" in client.get("/metrics").text


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_when_the_leading_process_dies_another_takes_over(
    serve_db: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # shared: the database (SQLite), keys and admin token
    with server_process(data_dir, serve_db) as first:
        assert wait_for(lambda: leads(first), 20)
        with server_process(data_dir, serve_db) as second:
            time.sleep(2)  # a few ticks: the second replica tries and does not get the lease
            assert not leads(second)
            assert first.process is not None
            first.process.kill()  # kill -9: no hand-over, the lease has to run out
            first.process.wait(10)
            assert wait_for(lambda: leads(second), TTL.total_seconds() + 10)


def test_outcomes_reported_to_one_process_reach_the_others_status(
    serve_db: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with server_process(data_dir, serve_db) as first, server_process(data_dir, serve_db) as second:
        with first.client() as client:
            client.post("/api/v1/policies/sec/versions", json={"document": {"tls": "1.2"}})
            client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        now = int(time.time())
        batch = {
            "batch_id": "b-across",
            "observations": [
                {"deployment": NAME, "variant": "stable", "second": now - 1, "requests": 40,
                 "errors": 2, "latency_sum_ms": 400.0, "latency_max_ms": 20.0}
            ],
        }  # fmt: skip
        with second.client() as client:
            assert client.post("/api/v1/observations", json=batch).status_code == 202

        def counted() -> bool:
            with first.client() as client:
                status = client.get(f"/api/v1/deployments/{NAME}/status").json()
            return bool(status["metrics"]["stable"]["requests"] == 40)

        assert wait_for(counted, 15)  # flushed by the second within a second, read by the first


async def test_a_veto_sent_to_a_follower_is_refused_naming_the_leader_metric(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await start(app)
    await app.lead().hold()
    other_replica.lead()
    with pytest.raises(NotLeader, match="send the veto to the leading replica"):
        await other_replica.monitor.veto(NAME, actor=ACTOR)


async def test_seconds_settle_longer_while_another_replica_takes_reports(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    await start(app)
    now = clock.now()
    alone = app.monitor.until(now)
    await record_second(other_replica, revision=1, canary_errors=0)
    await other_replica.observations.flush()
    await app.observations.follow()
    assert app.monitor.until(now) == alone - timedelta(seconds=2)
    clock.advance(60)  # that replica stopped flushing: back to the usual settling
    assert app.monitor.until(clock.now()) == clock.now() - (now - alone)
