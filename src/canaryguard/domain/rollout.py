"""Pure rollout operations: each takes a deployment and returns the next one (revision + 1).

Nothing here reads a clock or a store: the engine passes ``now`` and what it loaded, then
persists the result with its events and audit record in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from canaryguard.domain.assignment import Criterion, Split
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.models import (
    Deployment,
    DeploymentState,
    PolicyRef,
    RollbackConfig,
    Snapshot,
)
from canaryguard.domain.states import Action, check_transition, state_for_canary

__all__ = [
    "abort",
    "change_split",
    "check_deployment_name",
    "configure",
    "create_deployment",
    "fail",
    "promote",
    "restore",
    "start_canary",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62}){0,3}$")
# The REST API puts a deployment's name in the path and its sub-resources after it
# (/deployments/payments-gateway/security/snapshots), so a name may not end in one of these.
RESERVED_LAST_PARTS = frozenset(
    {
        "abort",
        "assignment",
        "canary",
        "config",
        "metrics",
        "observations",
        "promote",
        "rollbacks",
        "snapshots",
        "split",
        "status",
        "verdict",
        "veto",
    }
)


def check_deployment_name(name: str) -> str:
    """Deployment names are lower-case path-like words: ``payments-gateway/security``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"deployment name {name!r} is not valid: use lower-case letters, digits, '.', '_' "
            "and '-', in up to four parts separated by '/', each at most 63 characters"
        )
    if "/" in name and name.rsplit("/", 1)[1] in RESERVED_LAST_PARTS:
        reserved = ", ".join(sorted(RESERVED_LAST_PARTS))
        raise InvalidInput(f"deployment name {name!r} may not end in one of: {reserved}")
    return name


def _check_groups(groups: tuple[str, ...], what: str) -> tuple[str, ...]:
    for group in groups:
        if not isinstance(group, str) or not group or len(group) > 128:
            raise InvalidInput(
                f"{what}: group names are non-empty strings of at most 128 characters"
            )
        if not group.isprintable():  # lone surrogates are not printable either
            raise InvalidInput(
                f"{what}: group {group!r} holds a control character or a lone UTF-16 surrogate"
            )
    return tuple(sorted(set(groups)))


def _next(deployment: Deployment, now: datetime, **changes: object) -> Deployment:
    if "state" in changes and changes["state"] != deployment.state:
        changes.setdefault("state_since", now)
    changes.setdefault("state_reason", None)
    return deployment.model_copy(
        update={"revision": deployment.revision + 1, "updated_at": now, **changes}
    )


def create_deployment(
    name: str,
    *,
    stable: PolicyRef,
    salt: str,
    now: datetime,
    config: RollbackConfig | None = None,
) -> Deployment:
    """A new deployment serving ``stable`` to everyone, at revision 1."""
    return Deployment(
        name=check_deployment_name(name),
        revision=1,
        state=DeploymentState.IDLE,
        state_since=now,
        stable=stable,
        split=Split(salt=salt),
        config=config or RollbackConfig(),
        created_at=now,
        updated_at=now,
    )


def start_canary(
    deployment: Deployment,
    *,
    canary: PolicyRef,
    canary_basis_points: int,
    criterion: Criterion,
    attribute: str | None,
    canary_groups: tuple[str, ...],
    stable_groups: tuple[str, ...],
    baseline_snapshot_id: str,
    now: datetime,
) -> Deployment:
    """Start a canary of ``canary`` at the given share; the salt is kept so buckets stay put."""
    check_transition(deployment.state, Action.START_CANARY)
    if canary.name == deployment.stable.name and canary.version == deployment.stable.version:
        raise InvalidInput(f"{canary} is already the stable version of {deployment.name}")
    try:
        split = Split(
            canary_basis_points=canary_basis_points,
            criterion=criterion,
            salt=deployment.split.salt,
            attribute=attribute,
            canary_groups=_check_groups(canary_groups, "canary groups"),
            stable_groups=_check_groups(stable_groups, "stable groups"),
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return _next(
        deployment,
        now,
        canary=canary,
        split=split,
        state=state_for_canary(canary_basis_points),
        baseline_snapshot_id=baseline_snapshot_id,
        canary_run=None,  # begun by its start: the baseline snapshot
    )


def change_split(
    deployment: Deployment,
    *,
    canary_basis_points: int,
    canary_groups: tuple[str, ...] | None = None,
    stable_groups: tuple[str, ...] | None = None,
    now: datetime,
) -> Deployment:
    """Change the canary share (and, when given, the forced groups) of a running canary."""
    check_transition(deployment.state, Action.SET_SPLIT)
    changes: dict[str, object] = {"canary_basis_points": canary_basis_points}
    if canary_groups is not None:
        changes["canary_groups"] = _check_groups(canary_groups, "canary groups")
    if stable_groups is not None:
        changes["stable_groups"] = _check_groups(stable_groups, "stable groups")
    try:
        split = replace(deployment.split, **changes)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return _next(deployment, now, split=split, state=state_for_canary(canary_basis_points))


def _stable_only(split: Split) -> Split:
    return replace(split, canary_basis_points=0, canary_groups=(), stable_groups=())


def promote(deployment: Deployment, *, now: datetime) -> Deployment:
    """The canary becomes stable for everyone."""
    check_transition(deployment.state, Action.PROMOTE)
    if deployment.canary is None:  # unreachable through the table; kept so a bad row fails loudly
        check_transition(DeploymentState.IDLE, Action.PROMOTE)  # raises: no canary to promote
    return _next(
        deployment,
        now,
        stable=deployment.canary,
        canary=None,
        split=_stable_only(deployment.split),
        state=DeploymentState.FULLY_DEPLOYED,
    )


def abort(deployment: Deployment, *, reason: str, now: datetime) -> Deployment:
    """Stop the canary: stable serves everyone again."""
    check_transition(deployment.state, Action.ABORT)
    return _next(
        deployment,
        now,
        canary=None,
        split=_stable_only(deployment.split),
        state=DeploymentState.IDLE,
        state_reason=reason,
        baseline_snapshot_id=None,
    )


def configure(deployment: Deployment, *, config: RollbackConfig, now: datetime) -> Deployment:
    """Replace the rollback configuration."""
    check_transition(deployment.state, Action.CONFIGURE)
    return _next(deployment, now, config=config, state_reason=deployment.state_reason)


def fail(deployment: Deployment, *, reason: str, now: datetime) -> Deployment:
    """Mark the deployment failed, keeping who-gets-what as it is."""
    check_transition(deployment.state, Action.FAIL)
    return _next(deployment, now, state=DeploymentState.FAILED, state_reason=reason)


def restore(
    deployment: Deployment, snapshot: Snapshot, *, reason: str, now: datetime, run: str
) -> Deployment:
    """Give ``deployment`` back exactly the policies and split ``snapshot`` saved.

    The rollback configuration is kept as it is now: it is the operator's guard, not rollout
    state, and a rollback must not quietly undo a tightened threshold. The state becomes the
    saved canary's state when the snapshot had a canary, else ``rolled_back``. A canary brought
    back is a new run, ``run`` (the rollback's own pre-rollback snapshot): judged afresh from
    now, not on the evidence, checkpoint or veto of the run the snapshot was taken in.
    """
    check_transition(deployment.state, Action.ROLLBACK)
    if snapshot.deployment != deployment.name:
        raise InvalidInput(
            f"snapshot {snapshot.id} belongs to {snapshot.deployment}, not {deployment.name}"
        )
    has_canary = snapshot.canary is not None
    return _next(
        deployment,
        now,
        stable=snapshot.stable.ref,
        canary=snapshot.canary.ref if snapshot.canary is not None else None,
        split=snapshot.split,
        state=state_for_canary(snapshot.split.canary_basis_points)
        if has_canary
        else DeploymentState.ROLLED_BACK,
        state_since=now,
        state_reason=reason,
        baseline_snapshot_id=snapshot.baseline_snapshot_id if has_canary else None,
        canary_run=run if has_canary else None,
    )


def begin_staged_rollback(deployment: Deployment, *, reason: str, now: datetime) -> Deployment:
    """The deployment starts rolling back in stages: who gets what is unchanged until the first
    stage; changes other than the rollback's own steps are refused meanwhile."""
    check_transition(deployment.state, Action.BEGIN_STAGED_ROLLBACK)
    return _next(deployment, now, state=DeploymentState.ROLLING_BACK, state_reason=reason)


def rollback_step(
    deployment: Deployment, *, canary_basis_points: int, reason: str, now: datetime
) -> Deployment:
    """One stage of a staged rollback: the canary share goes down to ``canary_basis_points``."""
    check_transition(deployment.state, Action.ROLLBACK_STEP)
    split = replace(deployment.split, canary_basis_points=canary_basis_points)
    return _next(deployment, now, split=split, state_reason=reason)
