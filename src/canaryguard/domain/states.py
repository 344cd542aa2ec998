"""The deployment state machine: one explicit table of which action each state allows.

The state an action leads to follows from the deployment it produces (see ``domain.rollout``):
a canary at 0 % is ``validating`` (only groups forced onto the canary get it), above 0 % it is
``canary_active``; a rollback that restores a state with a canary returns to that canary's state,
otherwise to ``rolled_back``.
"""

from __future__ import annotations

from enum import StrEnum

from canaryguard.domain.errors import IllegalTransition
from canaryguard.domain.models import DeploymentState

__all__ = ["CANARY_STATES", "TRANSITIONS", "Action", "check_transition", "state_for_canary"]

S = DeploymentState


class Action(StrEnum):
    START_CANARY = "start_canary"
    SET_SPLIT = "change_split"
    BEGIN_SCALING = "begin_scaling"
    FINISH_SCALING = "finish_scaling"
    PROMOTE = "promote"
    ABORT = "abort"
    ROLLBACK = "roll_back"
    BEGIN_STAGED_ROLLBACK = "begin_staged_rollback"
    ROLLBACK_STEP = "step_rollback"
    FAIL = "fail"
    CONFIGURE = "configure"
    SNAPSHOT = "snapshot"


_AT_REST = frozenset({S.IDLE, S.FULLY_DEPLOYED, S.ROLLED_BACK})
CANARY_STATES = frozenset({S.VALIDATING, S.CANARY_ACTIVE, S.SCALING, S.ROLLING_BACK})
_ANY = frozenset(S)

TRANSITIONS: dict[Action, frozenset[DeploymentState]] = {
    # which states each action may start from
    Action.START_CANARY: _AT_REST,
    Action.SET_SPLIT: frozenset({S.VALIDATING, S.CANARY_ACTIVE}),
    Action.BEGIN_SCALING: frozenset({S.CANARY_ACTIVE}),
    Action.FINISH_SCALING: frozenset({S.SCALING}),
    Action.PROMOTE: frozenset({S.VALIDATING, S.CANARY_ACTIVE}),
    Action.ABORT: frozenset({S.VALIDATING, S.CANARY_ACTIVE, S.SCALING, S.FAILED}),
    # an immediate rollback may interrupt anything, a staged one included: it is the way out
    Action.ROLLBACK: _ANY,
    Action.BEGIN_STAGED_ROLLBACK: frozenset({S.VALIDATING, S.CANARY_ACTIVE, S.SCALING}),
    Action.ROLLBACK_STEP: frozenset({S.ROLLING_BACK}),
    # only a step that runs over time can fail half-way; a failed deployment may still have its
    # canary, and leaves "failed" only by an abort or an immediate rollback
    Action.FAIL: frozenset({S.ROLLING_BACK, S.SCALING}),
    Action.CONFIGURE: _ANY,
    Action.SNAPSHOT: _ANY,
}


_PHRASES = {
    Action.START_CANARY: "start a canary on a deployment",
    Action.SET_SPLIT: "change the split of a deployment",
    Action.BEGIN_SCALING: "start scaling a deployment",
    Action.FINISH_SCALING: "finish scaling a deployment",
    Action.PROMOTE: "promote a deployment",
    Action.ABORT: "abort a deployment",
    Action.ROLLBACK: "roll back a deployment",
    Action.BEGIN_STAGED_ROLLBACK: "start a staged rollback of a deployment",
    Action.ROLLBACK_STEP: "step the rollback of a deployment",
    Action.FAIL: "mark as failed a deployment",
    Action.CONFIGURE: "configure a deployment",
    Action.SNAPSHOT: "snapshot a deployment",
}


def check_transition(state: DeploymentState, action: Action) -> None:
    """Refuse ``action`` in ``state`` with an error naming both."""
    if state not in TRANSITIONS[action]:
        raise IllegalTransition(state.value, action.value, phrase=_PHRASES[action])


def state_for_canary(canary_basis_points: int) -> DeploymentState:
    """A canary without traffic is being validated; with traffic it is active."""
    return S.CANARY_ACTIVE if canary_basis_points > 0 else S.VALIDATING
