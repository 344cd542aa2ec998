"""Bearer tokens and the access every route declares.

Routes are added through :func:`guarded`, which both enforces the access and records it in the
OpenAPI document (``x-canaryguard-access``), so a route without a declared access cannot be
added by accident: :func:`check_every_route_is_guarded` refuses to start such an app.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute

from canaryguard.domain.access import Access, ApiToken
from canaryguard.engine.app import CanaryGuard

__all__ = ["ACCESS_KEY", "caller", "check_every_route_is_guarded", "get_guard", "guarded"]

ACCESS_KEY = "x-canaryguard-access"
API_PREFIX = "/api/v1"


def get_guard(request: Request) -> CanaryGuard:
    guard: CanaryGuard = request.app.state.guard
    return guard


def _require(access: Access) -> Callable[[Request], Any]:
    async def dependency(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise HTTPException(
                401,
                "a bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = await get_guard(request).tokens.authenticate(secret.strip())
        if token is None:
            raise HTTPException(
                401,
                "the token is unknown, revoked or expired",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not access.allows(token.role):
            allowed = ", ".join(sorted(role.value for role in access.roles))
            raise HTTPException(
                403, f"the {token.role.value} role may not do this; it needs {allowed}"
            )
        request.state.token = token

    return dependency


def caller(request: Request) -> ApiToken:
    """The token that made the request (its name is the actor in the audit log)."""
    token: ApiToken = request.state.token
    return token


def guarded(
    router: APIRouter, method: str, path: str, access: Access, **kwargs: Any
) -> Callable[..., Any]:
    """``router.api_route`` for one method, with the access enforced and documented."""
    extra = dict(kwargs.pop("openapi_extra", None) or {})
    extra[ACCESS_KEY] = access.value
    extra["x-canaryguard-roles"] = sorted(role.value for role in access.roles)
    responses = {
        401: {"description": "no token, or an unknown, revoked or expired one"},
        403: {"description": "the token's role may not do this"},
        **kwargs.pop("responses", {}),
    }
    return router.api_route(
        path,
        methods=[method],
        dependencies=[Depends(_require(access))],
        openapi_extra=extra,
        responses=responses,
        **kwargs,
    )


def check_every_route_is_guarded(app: FastAPI) -> None:
    for route in app.routes:
        if (
            isinstance(route, APIRoute)
            and route.path.startswith(API_PREFIX)
            and ACCESS_KEY not in (route.openapi_extra or {})
        ):
            raise RuntimeError(f"route {route.methods} {route.path} declares no access")
