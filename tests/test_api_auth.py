"""Every route, from the app's own route table: no token, a wrong token, and each role.

A new route that forgets to declare its access cannot even be registered (the app refuses to
build); this test checks that what each route declares is what it enforces."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import APIRouter

from canaryguard.api.app import ROUTERS, api_routes
from canaryguard.api.auth import ACCESS_KEY, check_every_route_is_guarded
from canaryguard.domain.access import Access, Role
from tests.servers import RunningServer


def _routes() -> list[tuple[str, str, Access]]:
    return sorted(
        (method, route.path, Access((route.openapi_extra or {})[ACCESS_KEY]))
        for route in api_routes()
        for method in route.methods or ()
    )


ROUTES = _routes()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def status_of(client: httpx.Client, method: str, path: str) -> int:
    with client.stream(method, concrete(path), json={}) as response:  # the SSE route never ends
        return response.status_code


def test_the_route_table_is_not_empty() -> None:
    assert len(ROUTES) > 25


def test_a_route_without_declared_access_is_refused() -> None:
    router = APIRouter()

    @router.get("/api/v1/forgotten")
    async def forgotten() -> None:
        return None

    with pytest.raises(RuntimeError, match="declares no access"):
        check_every_route_is_guarded([*ROUTERS, router])


@pytest.fixture
def role_tokens(server: RunningServer) -> dict[Role, str]:
    tokens = {}
    with server.client() as admin:
        for role in Role:
            made = admin.post(
                "/api/v1/tokens", json={"name": f"as-{role.value}", "role": role.value}
            )
            tokens[role] = made.json()["token"]
    return tokens


def test_every_route_enforces_its_declared_roles(
    server: RunningServer, role_tokens: dict[Role, str]
) -> None:
    failures = []
    anonymous = httpx.Client(base_url=server.url, timeout=10)
    wrong = httpx.Client(
        base_url=server.url, headers={"Authorization": "Bearer cgt_wrong"}, timeout=10
    )
    for method, path, access in ROUTES:
        for label, client in (("no token", anonymous), ("wrong token", wrong)):
            if (got := status_of(client, method, path)) != 401:
                failures.append(f"{method} {path} with {label}: {got}, expected 401")
        for role, token in role_tokens.items():
            with server.client(token) as client:
                got = status_of(client, method, path)
            if access.allows(role) and got in (401, 403):
                failures.append(
                    f"{method} {path} as {role.value}: {got}, but {access.value} allows it"
                )
            if not access.allows(role) and got != 403:
                failures.append(f"{method} {path} as {role.value}: {got}, expected 403")
    anonymous.close()
    wrong.close()
    assert failures == []
