"""Bearer tokens and the access every route declares.

Routes are added through :func:`guarded`, which both enforces the access and records it in the
OpenAPI document (``x-canaryguard-access``), so a route without a declared access cannot be
added by accident: :func:`check_every_route_is_guarded` refuses to start such an app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.routing import APIRoute

from canaryguard.api.problems import Problem
from canaryguard.domain.access import Access, ApiToken
from canaryguard.engine.app import CanaryGuard

__all__ = ["ACCESS_KEY", "caller", "check_every_route_is_guarded", "get_guard", "guarded"]

ACCESS_KEY = "x-canaryguard-access"
API_PREFIX = "/api/v1"


PROBLEMS = {
    400: "the input is wrong (the detail says what and where); nothing changed",
    401: "no token, or an unknown, revoked or expired one",
    403: "the token's role may not do this",
    404: "no such deployment, policy, version, snapshot, rollback or token",
    409: "a conflict: stale revision, taken name, or a state that does not allow this",
    413: "the body is too large",
    422: "the request does not match this operation's schema, or a policy its JSON Schema",
}


PROBLEM_REF = "#/components/schemas/Problem"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


async def get_guard(request: Request) -> CanaryGuard:  # async: FastAPI runs sync ones in threads
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
        guard: CanaryGuard = request.app.state.guard
        token = await guard.tokens.authenticate(secret.strip())
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


async def caller(request: Request) -> ApiToken:
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
    responses: dict[int | str, dict[str, Any]] = {
        status: _problem(description) for status, description in PROBLEMS.items()
    }
    for status, extra_response in kwargs.pop("responses", {}).items():
        if int(status) >= 400:
            responses[status] = _problem(extra_response["description"])
        else:
            responses[status] = extra_response
    return router.api_route(
        path,
        methods=[method],
        dependencies=[Depends(_require(access))],
        openapi_extra=extra,
        responses=responses,
        **kwargs,
    )


def check_every_route_is_guarded(routers: Iterable[APIRouter]) -> None:
    """Refuse a router with a route under /api/v1 that declares no access."""
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"{route!r} is not a plain API route; guard it explicitly")
            if route.path.startswith(API_PREFIX) and ACCESS_KEY not in (route.openapi_extra or {}):
                raise RuntimeError(f"route {route.methods} {route.path} declares no access")
