"""Tokens and keys: admin only."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends

from canaryguard.api.auth import caller, get_guard, guarded
from canaryguard.api.schemas import RotateOut, TokenCreatedOut, TokenIn, TokenOut
from canaryguard.domain.access import Access, ApiToken
from canaryguard.engine.app import CanaryGuard

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Guard = Annotated[CanaryGuard, Depends(get_guard)]
Caller = Annotated[ApiToken, Depends(caller)]


@guarded(router, "GET", "/tokens", Access.ADMIN, response_model=list[TokenOut], tags=["tokens"])
async def list_tokens(guard: Guard) -> list[TokenOut]:
    return [TokenOut.of(token) for token in await guard.tokens.list()]


@guarded(
    router,
    "POST",
    "/tokens",
    Access.ADMIN,
    response_model=TokenCreatedOut,
    status_code=201,
    tags=["tokens"],
)
async def create_token(body: TokenIn, guard: Guard, who: Caller) -> TokenCreatedOut:
    """Create a token; its secret is in this response only."""
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days is not None else None
    token, secret = await guard.tokens.create(
        body.name, role=body.role, actor=who.name, expires_in=lifetime
    )
    return TokenCreatedOut(**TokenOut.of(token).model_dump(), token=secret)


@guarded(router, "DELETE", "/tokens/{name}", Access.ADMIN, response_model=TokenOut, tags=["tokens"])
async def revoke_token(name: str, guard: Guard, who: Caller) -> TokenOut:
    """Revoke a token; it is refused from the next request on."""
    return TokenOut.of(await guard.tokens.revoke(name, actor=who.name))


@guarded(router, "POST", "/keys/rotate", Access.ADMIN, response_model=RotateOut, tags=["keys"])
async def rotate_keys(guard: Guard, who: Caller) -> RotateOut:
    """Make a new snapshot key and re-encrypt every snapshot with it."""
    key_id, count, skipped = await guard.rotate_keys(actor=who.name)
    return RotateOut(key_id=key_id, reencrypted=count, not_opened=list(skipped))
