"""Framework helpers: assign per request and record the outcome, with no code in the handlers.

The ASGI middleware (Starlette, FastAPI, any ASGI app) puts the assignment in
``request.state.canaryguard``; the WSGI one in ``environ["canaryguard.assignment"]``. A 5xx
response or an exception counts as an error. When the client has no state yet (never reached
the server and no cache), or finding the user key or assigning fails in any other way (a ``key=``
callable that raises), requests pass through unassigned and unrecorded: fail-open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from canaryguard.client._client import Client, NotReady
from canaryguard.client._state import Assignment

__all__ = ["ASGIMiddleware", "WSGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_log = logging.getLogger("canaryguard.client")


def _from_cookie(header: str | None, name: str) -> str | None:
    """The first cookie called ``name``, read leniently: one malformed cookie in the header
    (``theme=dark mode``) does not hide the others, as it does with ``SimpleCookie``."""
    if not header:
        return None
    for pair in header.split(";"):
        key, equals, value = pair.partition("=")
        if equals and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


class _Keys:
    """Where the user key comes from: a callable, else a header, else a cookie."""

    def __init__(
        self,
        header: str | None,
        cookie: str | None,
        key: Callable[[Mapping[str, Any]], str | None] | None,
    ) -> None:
        self.header = header.lower() if header else None
        self.cookie = cookie
        self.key = key


class _Assigning:
    """What both middlewares are configured with: the client, the deployment, the user key."""

    def __init__(
        self,
        *,
        client: Client,
        deployment: str,
        header: str | None = "x-user-id",
        cookie: str | None = None,
        key: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.keys = _Keys(header, cookie, key)
        self._warned = False

    def _assign(self, user: Callable[[], str | None], ip: str | None) -> Assignment | None:
        """The request's assignment, or None to serve it unassigned: never raises, as
        ``NotReady`` or a ``key=`` callable that fails must not fail the application's request."""
        try:
            return self.client.assign(self.deployment, user_id=user(), ip=ip)
        except Exception as error:
            if not isinstance(error, NotReady) and not self._warned:
                self._warned = True  # once: this runs on every request
                _log.warning(
                    "canaryguard: serving requests unassigned, assigning failed", exc_info=True
                )
            return None


class ASGIMiddleware(_Assigning):
    def __init__(self, app: ASGIApp, **options: Any) -> None:
        super().__init__(**options)
        self.app = app

    def _user(self, scope: Mapping[str, Any]) -> str | None:
        if self.keys.key is not None:
            return self.keys.key(scope)
        headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        if self.keys.header and self.keys.header in headers:
            return headers[self.keys.header]
        return _from_cookie(headers.get("cookie"), self.keys.cookie) if self.keys.cookie else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_address = scope.get("client")
        assignment = self._assign(
            lambda: self._user(scope), client_address[0] if client_address else None
        )
        if assignment is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["canaryguard"] = assignment
        status = 500
        responded = False
        started = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = int(message["status"])
                responded = True
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, tracking_send)
        except BaseException:
            # after a response has started its status decides (a client that went away,
            # CancelledError, under a 200 is a success); before, any exception is an error
            failed = not responded
            raise
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.client.record(assignment, ok=status < 500 and not failed, latency_ms=elapsed)


class WSGIMiddleware(_Assigning):
    def __init__(self, app: WSGIApp, **options: Any) -> None:
        super().__init__(**options)
        self.app = app

    def _user(self, environ: Mapping[str, Any]) -> str | None:
        if self.keys.key is not None:
            return self.keys.key(environ)
        if self.keys.header:
            value = environ.get("HTTP_" + self.keys.header.upper().replace("-", "_"))
            if value is not None:
                return str(value)
        return (
            _from_cookie(environ.get("HTTP_COOKIE"), self.keys.cookie) if self.keys.cookie else None
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        assignment = self._assign(lambda: self._user(environ), environ.get("REMOTE_ADDR"))
        if assignment is None:
            return self.app(environ, start_response)
        environ["canaryguard.assignment"] = assignment
        status = [500]
        started = time.perf_counter()

        def tracking_start_response(code: str, headers: Any, *args: Any) -> Any:
            status[0] = int(code.split(" ", 1)[0])
            return start_response(code, headers, *args)

        try:
            body = self.app(environ, tracking_start_response)
        except BaseException:
            self._record(assignment, started, ok=False)
            raise
        return _Recorded(
            body, lambda ok: self._record(assignment, started, ok=ok and status[0] < 500)
        )

    def _record(self, assignment: Assignment, started: float, *, ok: bool) -> None:
        self.client.record(assignment, ok=ok, latency_ms=(time.perf_counter() - started) * 1000)


class _Recorded:
    """The response body, recording the outcome once it has been sent (or failed)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[bool], None]) -> None:
        self._body = body
        self._done = done
        self._ok = True

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except BaseException:
            self._ok = False
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._ok)
