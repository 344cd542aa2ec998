"""The ASGI and WSGI middlewares assign per request and record outcomes by themselves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from canaryguard.client import ASGIMiddleware, Client, WSGIMiddleware
from tests.servers import RunningServer

NAME = "payments/security"


def seed(server: RunningServer) -> str:
    with server.client() as admin:
        admin.post("/api/v1/policies/sec/versions", json={"document": {"tls": "1.2"}})
        admin.post("/api/v1/policies/sec/versions", json={"document": {"tls": "1.3"}})
        admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        admin.post(f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 100})
        token: str = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()[
            "token"
        ]
    return token


def canary_metrics(server: RunningServer) -> dict[str, Any]:
    with server.client() as admin:
        metrics: dict[str, Any] = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"][
            "canary"
        ]
    return metrics


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    sdk = Client(server.url, seed(server), [NAME], flush_interval=60)
    yield sdk
    sdk.close()


def asgi_app() -> Starlette:
    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"tls": request.state.canaryguard.document["tls"]})

    async def broken(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=503)

    async def crash(_request: Request) -> PlainTextResponse:
        raise RuntimeError("boom")

    return Starlette(routes=[Route("/ok", ok), Route("/broken", broken), Route("/crash", crash)])


async def test_asgi_middleware_assigns_and_records(server: RunningServer, client: Client) -> None:
    app = ASGIMiddleware(asgi_app(), client=client, deployment=NAME)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        served = await http.get("/ok", headers={"x-user-id": "alice"})
        await http.get("/broken")
        await http.get("/crash")
    client.flush()
    assert served.json() == {"tls": "1.3"}  # the canary's document, at 100 %
    metrics = canary_metrics(server)
    assert (metrics["requests"], metrics["errors"]) == (3, 2)


def test_wsgi_middleware_assigns_and_records(server: RunningServer, client: Client) -> None:
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        assignment = environ["canaryguard.assignment"]
        if environ["PATH_INFO"] == "/broken":
            start_response("500 Internal Server Error", [])
            return [b"no"]
        start_response("200 OK", [("content-type", "text/plain")])
        return [assignment.document["tls"].encode()]

    app = WSGIMiddleware(wsgi_app, client=client, deployment=NAME)
    bodies = []
    for path in ("/ok", "/broken"):
        environ: dict[str, Any] = {"PATH_INFO": path, "HTTP_X_USER_ID": "bob"}
        setup_testing_defaults(environ)
        body = app(environ, lambda *_: None)
        bodies.append(b"".join(body))
        body.close()  # type: ignore[attr-defined]
    client.flush()
    assert bodies[0] == b"1.3"
    metrics = canary_metrics(server)
    assert (metrics["requests"], metrics["errors"]) == (2, 1)


def test_user_key_from_a_cookie_keeps_a_user_sticky(server: RunningServer) -> None:
    token = seed(server)
    with server.client() as admin:
        admin.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 50})
    with Client(server.url, token, [NAME]) as sdk:
        time.sleep(0.5)  # the split change reaches the client
        middleware = ASGIMiddleware(
            asgi_app(), client=sdk, deployment=NAME, header=None, cookie="uid"
        )
        seen = {
            middleware._user({"headers": [(b"cookie", b"uid=u-17; other=1")]}) for _ in range(3)
        }
    assert seen == {"u-17"}


def offline_client(tmp_path: Path) -> Client:
    """A client that never reaches a server, with the canary at 100 % from its cache."""
    state = {
        "name": NAME,
        "revision": 5,
        "split": {
            "canary_basis_points": 10_000,
            "criterion": "user_id",
            "salt": "abcd",
            "attribute": None,
            "canary_groups": [],
            "stable_groups": [],
        },
        "stable": {"name": "sec", "version": "1", "content_hash": "h1", "document": {}},
        "canary": {"name": "sec", "version": "2", "content_hash": "h2", "document": {}},
    }
    (tmp_path / (NAME.replace("/", "__") + ".json")).write_text(json.dumps(state))
    return Client("http://127.0.0.1:9", "t", [NAME], cache_dir=tmp_path, start=False)


def http_scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "headers": headers or [], "client": ("1.2.3.4", 1)}


async def no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(_message: Any) -> None:
    return None


async def test_asgi_cancellation_after_a_200_has_started_is_recorded_as_a_success(
    server: RunningServer, client: Client
) -> None:
    async def cancelled(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise asyncio.CancelledError  # the client went away

    with pytest.raises(asyncio.CancelledError):
        await ASGIMiddleware(cancelled, client=client, deployment=NAME)(
            http_scope(), no_body, discard
        )
    client.flush()
    metrics = canary_metrics(server)
    assert (metrics["requests"], metrics["errors"]) == (1, 0)


async def test_asgi_key_callable_that_raises_serves_the_request_unassigned(
    tmp_path: Path,
) -> None:
    seen: list[Any] = []

    async def app(scope: Any, _receive: Any, send: Any) -> None:
        seen.append(scope.get("state", {}).get("canaryguard"))
        await send({"type": "http.response.start", "status": 200, "headers": []})

    def key(scope: Any) -> str:
        return str(dict(scope["headers"])[b"x-user-id"])  # KeyError: no such header

    middleware = ASGIMiddleware(app, client=offline_client(tmp_path), deployment=NAME, key=key)
    await middleware(http_scope(), no_body, discard)
    assert seen == [None]


def test_wsgi_key_callable_that_raises_serves_the_request_unassigned(tmp_path: Path) -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ.get("canaryguard.assignment"))
        start_response("200 OK", [])
        return [b"ok"]

    def key(environ: Any) -> str:
        return str(environ["HTTP_X_USER_ID"])  # KeyError: no such header

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    middleware = WSGIMiddleware(app, client=offline_client(tmp_path), deployment=NAME, key=key)
    body = b"".join(middleware(environ, lambda *_: None))
    assert (body, seen) == (b"ok", [None])


def test_a_malformed_cookie_does_not_hide_the_user_key_cookie(tmp_path: Path) -> None:
    middleware = ASGIMiddleware(
        asgi_app(), client=offline_client(tmp_path), deployment=NAME, header=None, cookie="uid"
    )
    header = b"theme=dark mode; uid=user42"
    assert middleware._user({"headers": [(b"cookie", header)]}) == "user42"
