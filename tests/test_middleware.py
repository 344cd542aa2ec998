"""The ASGI and WSGI middlewares assign per request and record outcomes by themselves."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
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
