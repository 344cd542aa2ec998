"""Deployments through the store: operations, revisions, conflicts, events and audit."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from canaryguard.api.app import api_routes
from canaryguard.domain import rollout
from canaryguard.domain.errors import (
    AlreadyExists,
    Conflict,
    IllegalTransition,
    InvalidInput,
    NotFound,
    SchemaViolation,
)
from canaryguard.domain.models import DeploymentState, PolicyRef, SnapshotKind
from canaryguard.domain.rollout import RESERVED_LAST_PARTS, check_deployment_name
from canaryguard.domain.states import CANARY_STATES
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR, seed

NAME = "shop/security"


async def test_created_deployment_serves_stable_at_revision_one(app: CanaryGuard) -> None:
    await seed(app)
    deployment = await app.deployments.get(NAME)
    assert (deployment.revision, deployment.state, str(deployment.stable)) == (
        1,
        DeploymentState.IDLE,
        "sec@1",
    )


async def test_creating_a_taken_name_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(AlreadyExists):
        await app.deployments.create(NAME, stable="sec@1", actor=ACTOR)


async def test_creating_with_an_unknown_policy_is_refused(app: CanaryGuard) -> None:
    with pytest.raises(NotFound, match="no policy nope@1"):
        await app.deployments.create(NAME, stable="nope@1", actor=ACTOR)
    assert await app.deployments.list() == []


async def test_bad_deployment_name_is_refused(app: CanaryGuard) -> None:
    await app.policies.publish("sec", {"a": 1}, actor=ACTOR)
    with pytest.raises(InvalidInput, match="deployment name"):
        await app.deployments.create("Shop Security!", stable="sec@1", actor=ACTOR)


async def test_starting_a_canary_takes_a_baseline_snapshot(app: CanaryGuard) -> None:
    await seed(app)
    deployment = await app.deployments.start_canary(NAME, policy="sec@2", percent=12.5, actor=ACTOR)
    (info,) = await app.snapshots.list(NAME)
    assert (info.kind, info.revision, info.id) == (
        SnapshotKind.BEFORE_CANARY,
        1,
        deployment.baseline_snapshot_id,
    )
    assert deployment.split.canary_basis_points == 1250


async def test_every_change_grows_the_revision_by_one(app: CanaryGuard) -> None:
    await seed(app)
    revisions = [(await app.deployments.get(NAME)).revision]
    revisions.append(
        (await app.deployments.start_canary(NAME, policy="sec@2", percent=1, actor=ACTOR)).revision
    )
    revisions.append((await app.deployments.set_split(NAME, percent=5, actor=ACTOR)).revision)
    revisions.append(
        (await app.deployments.configure(NAME, changes={"max_snapshots": 9}, actor=ACTOR)).revision
    )
    revisions.append((await app.deployments.promote(NAME, actor=ACTOR)).revision)
    assert revisions == [1, 2, 3, 4, 5]


async def test_stale_revision_gets_a_conflict_and_changes_nothing(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(
        NAME, policy="sec@2", percent=1, actor=ACTOR, expected_revision=1
    )
    with pytest.raises(Conflict, match="revision 2, not 1") as caught:
        await app.deployments.set_split(NAME, percent=50, actor=ACTOR, expected_revision=1)
    assert caught.value.current_revision == 2
    assert (await app.deployments.get(NAME)).split.canary_basis_points == 100


async def test_promotion_snapshots_and_makes_the_canary_stable(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    promoted = await app.deployments.promote(NAME, actor=ACTOR)
    kinds = [info.kind for info in await app.snapshots.list(NAME)]
    assert kinds == [SnapshotKind.BEFORE_CANARY, SnapshotKind.BEFORE_PROMOTION]
    assert (str(promoted.stable), promoted.canary, promoted.state) == (
        "sec@2",
        None,
        DeploymentState.FULLY_DEPLOYED,
    )


async def test_abort_needs_a_reason(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    with pytest.raises(InvalidInput, match="reason is required"):
        await app.deployments.abort(NAME, reason=" ", actor=ACTOR)


async def test_abort_returns_everyone_to_stable(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    aborted = await app.deployments.abort(NAME, reason="not today", actor=ACTOR)
    assert (aborted.canary, aborted.state, aborted.state_reason) == (
        None,
        DeploymentState.IDLE,
        "not today",
    )


async def test_promoting_without_a_canary_is_an_illegal_transition(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(IllegalTransition, match="cannot promote a deployment that is idle"):
        await app.deployments.promote(NAME, actor=ACTOR)


async def test_illegal_split_change_names_state_and_action(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(
        IllegalTransition, match="cannot change the split of a deployment that is idle"
    ):
        await app.deployments.set_split(NAME, percent=5, actor=ACTOR)


async def test_refused_change_writes_no_event_and_no_audit(app: CanaryGuard) -> None:
    await seed(app)
    events, audit = len(await app.events.read()), len(await app.audit.list())
    with pytest.raises(IllegalTransition):
        await app.deployments.set_split(NAME, percent=5, actor=ACTOR)
    assert (len(await app.events.read()), len(await app.audit.list())) == (events, audit)


async def test_change_writes_its_events_and_audit_record(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    events = await app.events.read(deployment=NAME)
    audit = (await app.audit.list(deployment=NAME))[-1]
    assert [e.type for e in events] == [
        "io.canaryguard.deployment.created",
        "io.canaryguard.snapshot.created",
        "io.canaryguard.canary.started",
    ]
    assert (audit.action, audit.actor, audit.revision_before, audit.revision_after) == (
        "deployment.canary.start",
        ACTOR,
        1,
        2,
    )


async def test_canary_violating_a_later_schema_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    await app.policies.set_schema(
        "sec", {"type": "object", "properties": {"rate_limit": {"minimum": 80}}}, actor=ACTOR
    )
    with pytest.raises(SchemaViolation, match="/rate_limit: minimum"):
        await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    assert (await app.deployments.get(NAME)).state is DeploymentState.IDLE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error_rate_threshold": 2}, "error_rate_threshold"),
        ({"max_snapshots": 0}, "max_snapshots"),
        ({"max_snapshots": "many"}, "max_snapshots"),
        ({"dispersion_block_seconds": 1}, "dispersion_block_seconds"),
        ({"dispersion_block_seconds": 601}, "dispersion_block_seconds"),
        ({"no_such_setting": 1}, "unknown rollback setting no_such_setting"),
        ({}, "no settings"),
    ],
)
async def test_bad_config_is_refused_and_changes_nothing(
    app: CanaryGuard, changes: dict[str, object], message: str
) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match=message):
        await app.deployments.configure(NAME, changes=changes, actor=ACTOR)
    assert (await app.deployments.get(NAME)).revision == 1


async def test_config_change_takes_effect(app: CanaryGuard) -> None:
    await seed(app)
    updated = await app.deployments.configure(
        NAME, changes={"error_rate_threshold": 0.02, "auto_rollback_enabled": False}, actor=ACTOR
    )
    assert (updated.config.error_rate_threshold, updated.config.auto_rollback_enabled) == (
        0.02,
        False,
    )


@pytest.mark.parametrize("percent", [-5, 101, 10.001])
async def test_bad_percentage_is_refused(app: CanaryGuard, percent: float) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match="percentage"):
        await app.deployments.start_canary(NAME, policy="sec@2", percent=percent, actor=ACTOR)


async def test_unknown_criterion_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match="unknown split criterion 'zodiac'"):
        await app.deployments.start_canary(
            NAME, policy="sec@2", percent=5, criterion="zodiac", actor=ACTOR
        )


async def test_unknown_deployment_is_not_found(app: CanaryGuard) -> None:
    with pytest.raises(NotFound, match="no deployment named 'ghost'"):
        await app.deployments.get("ghost")


async def test_the_store_selects_deployments_by_state(app: CanaryGuard) -> None:
    await seed(app, "shop/idle")
    await seed(app, "shop/trial")
    await seed(app, "shop/failed")
    await app.deployments.start_canary("shop/trial", policy="sec@2", percent=10, actor=ACTOR)
    await app.deployments.start_canary("shop/failed", policy="sec@2", percent=10, actor=ACTOR)
    async with app.ports.store.write() as tx:  # as the executor does when a rollback fails
        current = await tx.deployments.get("shop/failed")
        assert current is not None
        stepping = rollout.begin_staged_rollback(current, reason="bad", now=current.updated_at)
        failed = rollout.fail(stepping, reason="broken", now=current.updated_at)
        await tx.deployments.update(failed, expected_revision=current.revision)
    async with app.ports.store.read() as tx:
        judged = await tx.deployments.all({DeploymentState.CANARY_ACTIVE})
        holding = await tx.deployments.all(CANARY_STATES | {DeploymentState.FAILED})
        everything = await tx.deployments.all()
        none = await tx.deployments.all(())
    assert [d.name for d in judged] == ["shop/trial"]
    assert [d.name for d in holding] == ["shop/failed", "shop/trial"]
    assert [d.name for d in everything] == ["shop/failed", "shop/idle", "shop/trial"]
    assert none == []


async def test_the_store_gives_every_revision_and_many_deployments_by_name(
    app: CanaryGuard,
) -> None:
    await seed(app, "shop/one")
    await seed(app, "shop/two")
    await app.deployments.start_canary("shop/two", policy="sec@2", percent=10, actor=ACTOR)
    async with app.ports.store.read() as tx:
        revisions = await tx.deployments.revisions()
        found = await tx.deployments.many(["shop/two", "shop/none", "shop/one"])
    assert revisions == {"shop/one": 1, "shop/two": 2}
    assert [(d.name, d.revision) for d in found] == [("shop/one", 1), ("shop/two", 2)]


async def test_many_deployments_are_read_past_the_bind_parameter_chunk(app: CanaryGuard) -> None:
    stable = PolicyRef(name="sec", version="1", content_hash="sha256:" + "1" * 64)
    names = [f"fleet/service-{k:04d}" for k in range(1_200)]
    at = datetime(2026, 11, 27, tzinfo=UTC)
    async with app.ports.store.write() as tx:
        for k, name in enumerate(names):
            await tx.deployments.insert(
                rollout.create_deployment(name, stable=stable, salt=f"{k:016x}", now=at)
            )
    async with app.ports.store.read() as tx:
        found = await tx.deployments.many(names)
    assert [d.name for d in found] == names


def test_no_deployment_name_can_end_in_the_last_part_of_a_deployment_route() -> None:
    # "x/verdict" as a name would make GET /deployments/x/verdict ambiguous with x's verdict
    suffix = re.compile(r"/\{name:path\}/([a-z_-]+)$")
    parts = {m.group(1) for route in api_routes() if (m := suffix.search(route.path))}
    assert parts
    assert parts <= RESERVED_LAST_PARTS


@pytest.mark.parametrize("last", ["verdict", "veto", "observations"])
def test_a_name_ending_in_a_route_word_is_refused(last: str) -> None:
    with pytest.raises(InvalidInput, match="may not end in one of"):
        check_deployment_name(f"shop/{last}")
