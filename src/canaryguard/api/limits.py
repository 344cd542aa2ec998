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
    """ASGI middleware: refuses a declared or streamed body larger than ``limit`` bytes."""

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
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

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


MAX_INFLATED_BYTES = 16 * 1024 * 1024  # a gzip body may inflate to this, no further
MAX_GZIP_MEMBERS = 64


class GzipRequest:
    """ASGI middleware: inflate request bodies sent with ``Content-Encoding: gzip`` (clients
    send observation batches compressed), refusing ones that inflate past a limit."""

    def __init__(self, app: ASGIApp, limit: int = MAX_INFLATED_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if headers.get(b"content-encoding", b"").lower() != b"gzip":
            await self.app(scope, receive, send)
            return
        compressed = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            compressed += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            body = _inflate(bytes(compressed), self.limit)
        except zlib.error:
            await _problem(send, 400, "invalid-input", "Bad Request", "the gzip body is corrupt")
            return
        except _TooLarge:
            detail = f"the body inflates to more than {self.limit} bytes"
            await _problem(send, 413, "too-large", "Content Too Large", detail)
            return
        rest = [
            (k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")
        ]
        inner = {**scope, "headers": [*rest, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def inflated() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(inner, inflated, send)


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
