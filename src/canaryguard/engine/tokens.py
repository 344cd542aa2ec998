"""API tokens: created (shown once), listed, revoked with immediate effect, authenticated."""

from __future__ import annotations

import secrets
from datetime import timedelta

from canaryguard.domain.access import ApiToken, Role, check_token_name, token_digest
from canaryguard.domain.errors import AlreadyExists, InvalidInput, NotFound
from canaryguard.engine.unit import Ports, unit_of_work

__all__ = ["MIN_TOKEN_LENGTH", "TokenService", "new_secret"]

MIN_TOKEN_LENGTH = 32
BOOTSTRAP_NAME = "admin"


def new_secret() -> str:
    return f"cgt_{secrets.token_urlsafe(32)}"


REMEMBER_SECONDS = 1.0
MAX_REMEMBERED = 10_000


class TokenService:
    def __init__(self, ports: Ports, *, remember_seconds: float = REMEMBER_SECONDS) -> None:
        self._ports = ports
        self.remember_seconds = remember_seconds
        # digest -> (the token as read, when it was read by the monotonic clock): every request
        # authenticates, and the busiest clients (the SDK's flushes) would read it every second
        self._recent: dict[str, tuple[ApiToken | None, float]] = {}
        self._generation = 0  # bumped when the remembered tokens are forgotten

    async def create(
        self,
        name: str,
        *,
        role: Role | str,
        actor: str,
        expires_in: timedelta | None = None,
        secret: str | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token; returns it with its secret, which is never stored or shown again."""
        check_token_name(name)
        try:
            chosen = Role(role)
        except ValueError as exc:
            roles = ", ".join(r.value for r in Role)
            raise InvalidInput(f"unknown role {role!r}; use one of {roles}") from exc
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidInput("a token's lifetime must be positive")
        if secret is not None and len(secret) < MIN_TOKEN_LENGTH:
            raise InvalidInput(
                f"a token must be at least {MIN_TOKEN_LENGTH} characters; "
                "use a random one (for example: openssl rand -base64 32)"
            )
        secret = secret or new_secret()
        async with unit_of_work(self._ports, actor) as unit:
            if await unit.tx.tokens.get(name) is not None:
                raise AlreadyExists(
                    f"a token named {name!r} exists; revoke it or pick another name"
                )
            token = ApiToken(
                name=name,
                role=chosen,
                digest=token_digest(secret),
                created_at=unit.now,
                created_by=unit.actor,
                expires_at=unit.now + expires_in if expires_in is not None else None,
            )
            if await unit.tx.tokens.by_digest(token.digest) is not None:
                raise AlreadyExists("that token is already registered under another name")
            await unit.tx.tokens.insert(token)
            await unit.audit(
                "token.create",
                details={"name": name, "role": chosen.value, "expires_at": _iso(token)},
            )
        self._forget()  # it may have been looked up, unknown, a moment ago
        return token, secret

    async def revoke(self, name: str, *, actor: str) -> ApiToken:
        """Revoke ``name``; requests with it are refused from now on."""
        async with unit_of_work(self._ports, actor) as unit:
            token = await unit.tx.tokens.get(name)
            if token is None:
                raise NotFound(f"no token named {name!r}")
            if token.revoked_at is None:
                await unit.tx.tokens.revoke(name, at=unit.now)
                await unit.audit("token.revoke", details={"name": name})
                token = token.model_copy(update={"revoked_at": unit.now})
        self._forget()  # committed: refused from now on here, on other replicas within a second
        return token

    def _forget(self) -> None:
        """Drop every remembered token, and any read still in flight from before now."""
        self._recent.clear()
        self._generation += 1

    async def list(self) -> list[ApiToken]:
        async with self._ports.store.read() as tx:
            return await tx.tokens.all()

    async def authenticate(self, secret: str) -> ApiToken | None:
        """The token ``secret`` belongs to, if it exists, is not revoked and has not expired.

        A token read from the database is reused for ``remember_seconds`` (1 s): a revocation
        through this process takes effect at once, through another replica within that time;
        expiry is checked on every request."""
        digest = token_digest(secret)
        clock = self._ports.clock
        remembered = self._recent.get(digest)
        if remembered is not None and clock.monotonic() - remembered[1] < self.remember_seconds:
            token = remembered[0]
        else:
            read_at, generation = clock.monotonic(), self._generation
            async with self._ports.store.read() as tx:
                token = await tx.tokens.by_digest(digest)
            if len(self._recent) >= MAX_REMEMBERED:
                self._recent.clear()  # unknown secrets must not grow this without bound
            if generation == self._generation:  # not read across a revocation here
                self._recent[digest] = (token, read_at)
        if token is None or not token.usable_at(clock.now()):
            return None
        return token

    async def bootstrap_admin(self, *, preset: str | None) -> str | None:
        """Make sure an admin can get in on first start.

        With ``preset`` (``CANARYGUARD_ADMIN_TOKEN``), that token is registered as admin if it is
        not yet known. Without it, an admin token is created only when no token exists at all;
        its secret is returned so the caller can show it once.
        """
        if preset is not None:
            async with self._ports.store.read() as tx:
                known = await tx.tokens.by_digest(token_digest(preset))
            if known is None:
                # named after its digest, so a changed preset gets a token of its own
                name = f"admin-preset-{token_digest(preset)[7:15]}"
                await self.create(name, role=Role.ADMIN, actor="canaryguard", secret=preset)
            return None
        async with self._ports.store.read() as tx:
            if await tx.tokens.count() > 0:
                return None
        _, secret = await self.create(BOOTSTRAP_NAME, role=Role.ADMIN, actor="canaryguard")
        return secret


def _iso(token: ApiToken) -> str | None:
    return token.expires_at.isoformat() if token.expires_at is not None else None
