"""The Server-Sent Events loop shared by the event and state streams: heartbeats, an end on
shutdown, and an end when the token that opened the stream is revoked or expires."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from canaryguard.domain.events import EventRecord
from canaryguard.engine.app import CanaryGuard

__all__ = ["event_stream"]

Render = Callable[[EventRecord], Awaitable[str | None]]


def event_stream(
    request: Request,
    guard: CanaryGuard,
    follower: AsyncGenerator[EventRecord, None],
    render: Render,
    *,
    opening: Sequence[str] = (),
) -> StreamingResponse:
    """Stream ``render(record)`` for every record ``follower`` yields (None skips one), after
    the ``opening`` messages."""
    state = request.app.state
    messages = _messages(
        guard,
        follower,
        render,
        opening=opening,
        shutdown=state.shutdown,
        heartbeat=state.heartbeat_seconds,
        secret=request.headers.get("authorization", "").partition(" ")[2].strip(),
    )
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    guard: CanaryGuard,
    follower: AsyncGenerator[EventRecord, None],
    render: Render,
    *,
    opening: Sequence[str],
    shutdown: asyncio.Event,
    heartbeat: float,
    secret: str,
) -> AsyncIterator[str]:
    checked = time.monotonic()
    closing: asyncio.Future[Any] = asyncio.ensure_future(shutdown.wait())
    pending: asyncio.Future[Any] | None = None
    try:
        yield "retry: 1000\n: connected\n\n"
        for first in opening:
            yield first
        while True:
            if time.monotonic() - checked >= heartbeat:
                # a token revoked (or expired) while its stream is open ends the stream
                if await guard.tokens.authenticate(secret) is None:
                    yield ": token revoked or expired\n\n"
                    return
                checked = time.monotonic()
            if pending is None:
                pending = asyncio.ensure_future(anext(follower))
            done, _ = await asyncio.wait(
                {pending, closing}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if pending in done:
                record = pending.result()
                pending = None
                rendered = await render(record)
                if rendered is not None:
                    yield rendered
            elif closing in done:
                yield ": server shutting down\n\n"
                return
            else:
                yield ": heartbeat\n\n"
    finally:
        closing.cancel()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await follower.aclose()
