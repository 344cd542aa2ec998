"""The one exception tree of canaryguard.

::

    CanaryGuardError                 every error canaryguard raises on purpose
    ├── InvalidInput                 bad input: a malformed file, a wrong type, a value out of range
    │   └── SchemaViolation          a policy document breaks its policy's JSON Schema
    ├── NotFound                     an unknown deployment, policy, version, snapshot or rollback
    ├── AlreadyExists                a name or version that is taken
    ├── Conflict                     a stale revision, or an operation that collides with another
    │   └── NotLeader                a controller replica acting without the controller lease
    ├── NotAllowed                   not for this caller (e.g. confirming one's own rollback)
    ├── IllegalTransition            an action the deployment's state does not allow
    ├── IntegrityError               a stored record fails its check (tampered, foreign, wrong key)
    ├── RollbackFailedError          a rollback could not be applied (nothing was half-applied)
    ├── DeliveryFailed               a notification did not reach its channel
    └── Unavailable                  the database does not answer

Every message names what is wrong, so surfaces can show it as it is.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CanaryGuardError",
    "Conflict",
    "DeliveryFailed",
    "IllegalTransition",
    "IntegrityError",
    "InvalidInput",
    "NotAllowed",
    "NotFound",
    "NotLeader",
    "RollbackFailedError",
    "SchemaViolation",
    "Unavailable",
]


class CanaryGuardError(Exception):
    """Base of every error canaryguard raises on purpose."""


class InvalidInput(CanaryGuardError):
    """Input that canaryguard refuses; nothing was changed."""


class SchemaViolation(InvalidInput):
    """A policy document does not satisfy its policy's JSON Schema.

    ``problems`` lists ``(json_pointer, message)`` pairs, one per failed rule.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class NotFound(CanaryGuardError):
    """The named thing does not exist."""


class AlreadyExists(CanaryGuardError):
    """The name or version is already taken."""


class Conflict(CanaryGuardError):
    """The write lost a race: the revision it read is stale, or another operation is open."""

    def __init__(self, message: str, *, current_revision: int | None = None) -> None:
        super().__init__(message)
        self.current_revision = current_revision


class NotLeader(Conflict):
    """This replica does not hold the controller lease (any more): another one acts."""


class NotAllowed(CanaryGuardError):
    """The caller may not do this (for example, confirm a rollback they started themselves)."""


class IllegalTransition(CanaryGuardError):
    """The deployment's state does not allow the action."""

    def __init__(self, state: str, action: str, *, phrase: str | None = None) -> None:
        doing = phrase or f"{action.replace('_', ' ')} a deployment"
        super().__init__(f"cannot {doing} that is {state.replace('_', ' ')}")
        self.state = state
        self.action = action


class IntegrityError(CanaryGuardError):
    """A stored record failed its integrity check (tampered, foreign, or no key opens it)."""


class RollbackFailedError(CanaryGuardError):
    """A rollback could not be applied; the deployment is unchanged and the failure recorded."""

    def __init__(self, message: str, *, rollback_id: str) -> None:
        super().__init__(message)
        self.rollback_id = rollback_id


class Unavailable(CanaryGuardError):
    """The database cannot be reached (or refused the connection); try again later."""


class DeliveryFailed(CanaryGuardError):
    """A notification did not reach its channel.

    ``permanent`` failures (the receiver refused the message itself: most 4xx answers, a
    rejected recipient) are not retried; the others (timeouts, 5xx, 429, a closed connection)
    are.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after  # seconds the receiver asked to wait (Retry-After)
