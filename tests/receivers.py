"""Receivers on loopback for the notifiers' tests: a minimal HTTP/1.1 server on a real socket."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 receiver on a loopback socket: records each request, answers the statuses
    it is told in turn (then 200), after ``delay`` seconds."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    retry_after: str | None = None  # sent as Retry-After with a refusal
    slow_body: bool = False  # a 2xx whose body never comes in full
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set at each request
    url: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        """Listen on a free loopback port (over TLS with ``tls``)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            headers = {}
            for line in filter(None, lines):
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(request_line.split(" ")[1], headers, body))
            self.arrived.set()
            await asyncio.sleep(self.delay)
            status = self.statuses.pop(0) if self.statuses else 200
            payload = b"ok" if status < 300 else b"no_service"
            extra = "Location: /elsewhere\r\n" if 300 <= status < 400 else ""
            if self.retry_after is not None and status >= 400:
                extra += f"Retry-After: {self.retry_after}\r\n"
            length = 1000 if self.slow_body and status < 300 else len(payload)
            writer.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{extra}"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            if length > len(payload):
                await asyncio.sleep(30)  # the rest of the body never comes (until stop)
        finally:
            writer.close()
            self._handlers.discard(task)
