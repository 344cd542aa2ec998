"""Manual rollback with confirmation: pending, confirm, cancel, expiry, the second person."""

from __future__ import annotations

import pytest

from canaryguard.adapters.clock import ManualClock
from canaryguard.domain.errors import Conflict, NotAllowed
from canaryguard.domain.events import RollbackCancelled
from canaryguard.domain.models import DeploymentState, RollbackRecord, RollbackStatus
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR, seed

NAME = "shop/security"


async def start(app: CanaryGuard, **config: object) -> None:
    await seed(app)
    if config:
        await app.deployments.configure(NAME, changes=config, actor=ACTOR)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)


async def state(app: CanaryGuard) -> DeploymentState:
    return (await app.deployments.get(NAME)).state


async def test_a_requested_rollback_is_pending_and_changes_nothing(app: CanaryGuard) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    assert pending.status is RollbackStatus.PENDING
    assert pending.expires_at is not None
    assert await state(app) is DeploymentState.CANARY_ACTIVE


async def test_confirming_carries_it_out_and_names_both_people(app: CanaryGuard) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    done = await app.rollbacks.confirm(pending.id, actor="bob")
    assert (done.id, done.status, done.actor, done.confirmed_by) == (
        pending.id,
        RollbackStatus.COMPLETED,
        "alice",
        "bob",
    )
    assert await state(app) is DeploymentState.ROLLED_BACK
    events = [e.type for e in await app.events.read(deployment=NAME)]
    assert events.count("io.canaryguard.rollback.manual_initiated") == 1


async def test_cancelling_drops_it(app: CanaryGuard) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    cancelled = await app.rollbacks.cancel(pending.id, actor="bob")
    assert (cancelled.status, cancelled.cancelled_by) == (RollbackStatus.CANCELLED, "bob")
    assert await state(app) is DeploymentState.CANARY_ACTIVE
    with pytest.raises(Conflict, match="cancelled, not pending"):
        await app.rollbacks.confirm(pending.id, actor="bob")


async def test_cancelling_announces_the_end_of_the_rollback(app: CanaryGuard) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    await app.rollbacks.cancel(pending.id, actor="bob")
    [closed] = [
        e.event
        for e in await app.events.read(deployment=NAME)
        if e.type == "io.canaryguard.rollback.cancelled"
    ]
    assert isinstance(closed, RollbackCancelled)
    assert (closed.rollback_id, closed.status, closed.closed_by, closed.reason) == (
        pending.id,
        "cancelled",
        "bob",
        "errors up",
    )


async def expire_one(app: CanaryGuard) -> tuple[RollbackRecord, list[RollbackRecord]]:
    """A rollback requested with a 60 s deadline, and what ``expire_due`` 61 s later closed."""
    await start(app, confirmation_timeout_seconds=60)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    clock = app.ports.clock
    assert isinstance(clock, ManualClock)
    clock.advance(61)
    return pending, await app.rollbacks.expire_due()


async def test_an_unconfirmed_rollback_expires_and_changes_nothing(app: CanaryGuard) -> None:
    pending, [expired] = await expire_one(app)
    assert (expired.id, expired.status) == (pending.id, RollbackStatus.EXPIRED)
    assert await state(app) is DeploymentState.CANARY_ACTIVE
    audit = [r.action for r in await app.audit.list(deployment=NAME)]
    assert "rollback.expired" in audit


async def test_expiry_announces_the_end_of_the_rollback(app: CanaryGuard) -> None:
    pending, _ = await expire_one(app)
    closed = [
        e.event
        for e in await app.events.read(deployment=NAME)
        if e.type == "io.canaryguard.rollback.cancelled"
    ]
    assert [(c.rollback_id, c.status) for c in closed if isinstance(c, RollbackCancelled)] == [
        (pending.id, "expired")
    ]


async def test_a_late_confirmation_is_refused_and_the_rollback_recorded_as_expired(
    app: CanaryGuard,
) -> None:
    await start(app, confirmation_timeout_seconds=60)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    app.ports.clock.advance(61)  # type: ignore[attr-defined]
    with pytest.raises(Conflict, match="expired unconfirmed"):
        await app.rollbacks.confirm(pending.id, actor="bob")
    assert (await app.rollbacks.get(pending.id)).status is RollbackStatus.EXPIRED
    assert await state(app) is DeploymentState.CANARY_ACTIVE


async def test_with_a_second_person_required_the_initiator_cannot_confirm(
    app: CanaryGuard,
) -> None:
    await start(app, require_second_person=True)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    with pytest.raises(NotAllowed, match="second person"):
        await app.rollbacks.confirm(pending.id, actor="alice")
    assert (await app.rollbacks.confirm(pending.id, actor="bob")).confirmed_by == "bob"


async def test_with_a_second_person_required_an_immediate_manual_rollback_is_refused(
    app: CanaryGuard,
) -> None:
    await start(app, require_second_person=True)
    with pytest.raises(NotAllowed, match="second person"):
        await app.rollbacks.rollback(NAME, reason="errors up", actor="alice")
    assert await state(app) is DeploymentState.CANARY_ACTIVE


async def test_a_second_rollback_while_one_is_pending_names_the_open_one(
    app: CanaryGuard,
) -> None:
    await start(app)
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice")
    with pytest.raises(Conflict, match=f"rollback {pending.id} of {NAME} is still open"):
        await app.rollbacks.request(NAME, reason="again", actor="bob")
    with pytest.raises(Conflict, match=pending.id):
        await app.rollbacks.rollback(NAME, reason="now", actor="bob")


async def test_with_a_second_person_required_a_staged_rollback_needs_one_too(
    app: CanaryGuard,
) -> None:
    await start(app, require_second_person=True)
    with pytest.raises(NotAllowed, match="second person"):
        await app.executor.start(NAME, reason="errors up", actor="alice")
    pending = await app.rollbacks.request(NAME, reason="errors up", actor="alice", staged=True)
    with pytest.raises(NotAllowed, match="second person"):
        await app.rollbacks.confirm(pending.id, actor="alice")
    assert (await app.rollbacks.confirm(pending.id, actor="bob")).status is RollbackStatus.RUNNING
