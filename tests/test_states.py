"""The state machine: the table, its errors, and random operation sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.domain import rollout
from canaryguard.domain.assignment import Criterion, Split
from canaryguard.domain.errors import CanaryGuardError, IllegalTransition
from canaryguard.domain.models import (
    Deployment,
    DeploymentState,
    MetricsSnapshot,
    PolicyDocument,
    PolicyRef,
    RollbackConfig,
    Snapshot,
    SnapshotKind,
)
from canaryguard.domain.states import CANARY_STATES, TRANSITIONS, Action, check_transition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
V1 = PolicyRef(name="sec", version="1", content_hash="sha256:1")
V2 = PolicyRef(name="sec", version="2", content_hash="sha256:2")


def new_deployment() -> Deployment:
    return rollout.create_deployment("shop/sec", stable=V1, salt="salt", now=T0)


def snapshot_of(d: Deployment, now: datetime) -> Snapshot:
    return Snapshot(
        id=f"snap-{d.revision}",
        deployment=d.name,
        created_at=now,
        kind=SnapshotKind.MANUAL,
        actor="t",
        revision=d.revision,
        state=d.state,
        state_since=d.state_since,
        stable=PolicyDocument(ref=d.stable, document={}),
        canary=PolicyDocument(ref=d.canary, document={}) if d.canary else None,
        split=d.split,
        config=d.config,
        baseline_snapshot_id=d.baseline_snapshot_id,
        metrics=MetricsSnapshot(window_seconds=0, until=now),
    )


def test_every_action_has_a_row() -> None:
    assert set(TRANSITIONS) == set(Action)


def test_illegal_action_names_state_and_action() -> None:
    with pytest.raises(IllegalTransition, match="cannot promote a deployment that is idle"):
        check_transition(DeploymentState.IDLE, Action.PROMOTE)


def test_canary_at_zero_percent_is_validating() -> None:
    d = rollout.start_canary(
        new_deployment(),
        canary=V2,
        canary_basis_points=0,
        criterion=Criterion.USER_ID,
        attribute=None,
        canary_groups=("qa",),
        stable_groups=(),
        baseline_snapshot_id="snap-1",
        now=T0,
    )
    assert d.state is DeploymentState.VALIDATING


def test_raising_a_validating_canary_makes_it_active() -> None:
    d = rollout.start_canary(
        new_deployment(),
        canary=V2,
        canary_basis_points=0,
        criterion=Criterion.USER_ID,
        attribute=None,
        canary_groups=(),
        stable_groups=(),
        baseline_snapshot_id="snap-1",
        now=T0,
    )
    assert (
        rollout.change_split(d, canary_basis_points=500, now=T0).state
        is DeploymentState.CANARY_ACTIVE
    )


def test_promotion_makes_the_canary_stable_and_clears_the_split() -> None:
    d = rollout.start_canary(
        new_deployment(),
        canary=V2,
        canary_basis_points=1_000,
        criterion=Criterion.USER_ID,
        attribute=None,
        canary_groups=("qa",),
        stable_groups=(),
        baseline_snapshot_id="snap-1",
        now=T0,
    )
    promoted = rollout.promote(d, now=T0)
    assert (promoted.stable, promoted.canary, promoted.split.canary_basis_points) == (V2, None, 0)
    assert promoted.split.canary_groups == ()
    assert promoted.state is DeploymentState.FULLY_DEPLOYED


def test_canary_of_the_stable_version_is_refused() -> None:
    with pytest.raises(CanaryGuardError, match="already the stable version"):
        rollout.start_canary(
            new_deployment(),
            canary=V1,
            canary_basis_points=100,
            criterion=Criterion.USER_ID,
            attribute=None,
            canary_groups=(),
            stable_groups=(),
            baseline_snapshot_id="x",
            now=T0,
        )


def test_restore_without_a_canary_ends_rolled_back() -> None:
    base = new_deployment()
    snap = snapshot_of(base, T0)
    d = rollout.start_canary(
        base,
        canary=V2,
        canary_basis_points=1_000,
        criterion=Criterion.USER_ID,
        attribute=None,
        canary_groups=(),
        stable_groups=(),
        baseline_snapshot_id=snap.id,
        now=T0,
    )
    restored = rollout.restore(d, snap, reason="bad", now=T0, run="r1")
    assert (restored.state, restored.canary, restored.split) == (
        DeploymentState.ROLLED_BACK,
        None,
        base.split,
    )


def test_restore_keeps_the_current_rollback_config() -> None:
    base = new_deployment()
    snap = snapshot_of(base, T0)
    tightened = rollout.configure(base, config=RollbackConfig(error_rate_threshold=0.01), now=T0)
    assert (
        rollout.restore(tightened, snap, reason="r", now=T0, run="r1").config.error_rate_threshold
        == 0.01
    )


ops = st.lists(
    st.one_of(
        st.tuples(st.just("canary"), st.integers(0, 10_000)),
        st.tuples(st.just("split"), st.integers(0, 10_000)),
        st.tuples(st.just("promote"), st.just(0)),
        st.tuples(st.just("abort"), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("rollback"), st.integers(0, 50)),
        st.tuples(st.just("fail"), st.just(0)),
        st.tuples(st.just("configure"), st.integers(1, 100)),
    ),
    max_size=40,
)


def _consistent(d: Deployment) -> None:
    if d.state in CANARY_STATES:
        assert d.canary is not None, d
    if d.canary is not None:
        assert d.state in CANARY_STATES | {DeploymentState.FAILED}, d
    if d.canary is None:
        assert d.split.canary_basis_points == 0
        assert d.split.canary_groups == ()
    if d.state is DeploymentState.VALIDATING:
        assert d.split.canary_basis_points == 0
    if d.state is DeploymentState.CANARY_ACTIVE:
        assert d.split.canary_basis_points > 0
    assert isinstance(d.split, Split)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_operations_never_reach_an_illegal_state_and_revisions_grow(
    operations: list[tuple[str, int]],
) -> None:
    d = new_deployment()
    snaps: list[Snapshot] = [snapshot_of(d, T0)]
    now = T0
    for name, arg in operations:
        now += timedelta(seconds=1)
        before = d.revision
        try:
            if name == "canary":
                d = rollout.start_canary(
                    d,
                    canary=V2 if d.stable == V1 else V1,
                    canary_basis_points=arg,
                    criterion=Criterion.USER_ID,
                    attribute=None,
                    canary_groups=("qa",),
                    stable_groups=(),
                    baseline_snapshot_id=snaps[-1].id,
                    now=now,
                )
            elif name == "split":
                d = rollout.change_split(d, canary_basis_points=arg, now=now)
            elif name == "promote":
                d = rollout.promote(d, now=now)
            elif name == "abort":
                d = rollout.abort(d, reason="stop", now=now)
            elif name == "snapshot":
                snaps.append(snapshot_of(d, now))
                continue
            elif name == "rollback":
                d = rollout.restore(
                    d, snaps[arg % len(snaps)], reason="back", now=now, run=f"r{arg}"
                )
            elif name == "fail":
                d = rollout.fail(d, reason="broken", now=now)
            else:
                d = rollout.configure(d, config=RollbackConfig(max_snapshots=arg), now=now)
        except IllegalTransition:
            assert d.revision == before
            continue
        assert d.revision == before + 1
        _consistent(d)
