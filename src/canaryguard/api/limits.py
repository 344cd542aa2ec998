"""Request size limit: bodies over the limit get 413 before they are read into memory."""

from __future__ import annotations

import json
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY_BYTES", "BodySizeLimit", "GzipRequest", "RejectNul"]

MAX_BODY_BYTES = 2 * 1024 * 1024  # a policy document may be 1 MB; JSON escaping can double it


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuses a declared or streamed body larger than ``limit`` bytes.

    A body is read whole (up to the limit) before the route sees it: one sent in chunks
    without a length is only known to be too large once read, and refusing it from inside the
    route's own reading would reach the client as a vague "error parsing the body"."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        if scope.get("method") in _BODILESS:
            await self.app(scope, receive, send)  # streams (SSE) read no body: left as they are
            return
        try:
            body, ended = await _read_body(receive, self.limit)
        except _TooLarge:
            await self._refuse(send)
            return
        await self.app(scope, _replay(body, receive, ended=ended), send)

    async def _refuse(self, send: Send) -> None:
        detail = f"the request body is larger than {self.limit} bytes"
        await _problem(send, 413, "too-large", "Content Too Large", detail)


async def _problem(send: Send, status: int, kind: str, title: str, detail: str) -> None:
    body = json.dumps(
        {
            "type": f"https://canaryguard.dev/problems/{kind}",
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RejectNul:
    """ASGI middleware: a NUL character in the path or query names nothing canaryguard stores
    (PostgreSQL text cannot hold one), so such a request gets 400 before any lookup."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")
        ):
            await _problem(
                send,
                400,
                "invalid-input",
                "Bad Request",
                "the path or query contains a NUL character",
            )
            return
        await self.app(scope, receive, send)


MAX_INFLATED_BYTES = 16 * 1024 * 1024  # an observation batch may inflate to this, no further
MAX_GZIP_MEMBERS = 64
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, up to ``limit`` bytes (``_TooLarge`` past it), and whether the client
    ended it (else it disconnected)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body), False
        body += message.get("body", b"")
        if len(body) > limit:
            raise _TooLarge
        if not message.get("more_body", False):
            return bytes(body), True


def _replay(body: bytes, receive: Receive, *, ended: bool = True) -> Receive:
    """A ``receive`` that gives ``body`` in one message, then what ``receive`` gives."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent or not ended:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class GzipRequest:
    """ASGI middleware: inflate request bodies sent with ``Content-Encoding: gzip`` (clients
    send observation batches compressed), refusing ones that inflate past a limit: ``limit``
    for the paths under ``inflating`` (observation batches, which compress well), ``other`` for
    the rest, so that compression gets no larger body past the size limit than plain JSON."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int = MAX_INFLATED_BYTES,
        *,
        other: int = MAX_BODY_BYTES,
        inflating: tuple[str, ...] = ("/api/v1/observations",),
    ) -> None:
        self.app = app
        self.limit = limit
        self.other = other
        self.inflating = inflating

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if headers.get(b"content-encoding", b"").lower() != b"gzip":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.limit if path.startswith(self.inflating) else self.other
        try:
            # the size limit outside has bounded what was sent; this bounds it here too
            compressed, _ = await _read_body(receive, limit)
        except _TooLarge:
            await _problem(send, 413, "too-large", "Content Too Large", f"over {limit} bytes")
            return
        try:
            body = _inflate(compressed, limit)
        except zlib.error:
            await _problem(send, 400, "invalid-input", "Bad Request", "the gzip body is corrupt")
            return
        except _TooLarge:
            detail = f"the body inflates to more than {limit} bytes"
            await _problem(send, 413, "too-large", "Content Too Large", detail)
            return
        rest = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ]
        inner = {**scope, "headers": [*rest, (b"content-length", str(len(body)).encode())]}
        await self.app(inner, _replay(body, receive), send)


def _inflate(compressed: bytes, limit: int) -> bytes:
    """Every gzip member of ``compressed`` inflated and joined (RFC 1952 allows several, as
    ``cat a.gz b.gz`` makes); ``_TooLarge`` past ``limit`` bytes, ``zlib.error`` when corrupt
    or made of more than ``MAX_GZIP_MEMBERS`` members (each member copies the rest of the body:
    thousands of tiny ones would hold the event loop for seconds)."""
    parts: list[bytes] = []
    size = 0
    rest = compressed
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        part = inflater.decompress(rest, limit - size + 1)
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise zlib.error("the gzip body ends early")
        parts.append(part)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
    raise zlib.error(f"the gzip body has more than {MAX_GZIP_MEMBERS} members")
