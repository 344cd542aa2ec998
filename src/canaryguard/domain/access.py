"""Who may do what: roles, API tokens, and the access each operation needs.

Roles (DESIGN.md): a **reporter** (client SDKs) reads state and reports observations; a
**viewer** reads everything; an **operator** also deploys, changes splits and starts, confirms
and cancels rollbacks; an **admin** also changes rollback configuration, keys and tokens.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict

from canaryguard.domain.errors import InvalidInput

__all__ = ["Access", "ApiToken", "Role", "check_token_name", "token_digest"]

_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    REPORTER = "reporter"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Access(StrEnum):
    """What an operation needs; ``allows`` says which roles have it."""

    STATE = "state"  # deployment state and assignments: what clients need to serve
    REPORT = "report"  # report observations
    READ = "read"  # everything else that only reads
    OPERATE = "operate"  # deploy, split, promote, abort, snapshot, roll back
    ADMIN = "admin"  # rollback configuration, keys, tokens

    @property
    def roles(self) -> frozenset[Role]:
        return _ROLES[self]

    def allows(self, role: Role) -> bool:
        return role in _ROLES[self]


_ROLES: dict[Access, frozenset[Role]] = {
    Access.STATE: frozenset(Role),
    Access.REPORT: frozenset({Role.REPORTER, Role.OPERATOR, Role.ADMIN}),
    Access.READ: frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN}),
    Access.OPERATE: frozenset({Role.OPERATOR, Role.ADMIN}),
    Access.ADMIN: frozenset({Role.ADMIN}),
}


class ApiToken(BaseModel):
    """A bearer token as stored: its digest, never the token itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    digest: str
    created_at: AwareDatetime
    created_by: str
    expires_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None

    def usable_at(self, moment: AwareDatetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or moment < self.expires_at


def token_digest(token: str) -> str:
    """Tokens are 256-bit random strings, so a plain sha256 is enough to store them safely."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def check_token_name(name: str) -> str:
    if not isinstance(name, str) or not _TOKEN_NAME.match(name):
        raise InvalidInput(
            f"token name {name!r} is not valid: letters, digits, '.', '_', '@', '-', at most 64"
        )
    return name
