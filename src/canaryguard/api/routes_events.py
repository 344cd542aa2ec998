"""Events: the stored log as JSON, and a live Server-Sent Events stream resumable with
``Last-Event-ID``. Each SSE message is one CloudEvents 1.0 JSON event; its ``id`` is the log's
sequence number."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from canaryguard.api.auth import get_guard, guarded
from canaryguard.api.schemas import MAX_SEQ
from canaryguard.domain.access import Access
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.events import EventRecord
from canaryguard.engine.app import CanaryGuard

__all__ = ["router", "sse_message"]

router = APIRouter(prefix="/api/v1/events", tags=["events"])
Guard = Annotated[CanaryGuard, Depends(get_guard)]


def sse_message(record: EventRecord) -> str:
    data = json.dumps(record.to_cloudevent(), separators=(",", ":"))
    return f"id: {record.seq}\nevent: {record.type}\ndata: {data}\n\n"


@guarded(router, "GET", "/log", Access.READ, response_model=list[dict[str, Any]])
async def event_log(
    guard: Guard,
    deployment: str | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Stored events after ``after`` as CloudEvents, oldest first."""
    return [
        r.to_cloudevent()
        for r in await guard.events.read(after_seq=after, deployment=deployment, limit=limit)
    ]


@guarded(
    router,
    "GET",
    "",
    Access.READ,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "CloudEvents as SSE"}},
)
async def stream(
    request: Request,
    guard: Guard,
    deployment: str | None = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="replay events after this sequence number")
    ] = None,
    last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
) -> StreamingResponse:
    """Live events. Without ``Last-Event-ID`` or ``after`` it starts with the next event."""
    if last_event_id is not None:
        try:
            start = int(last_event_id)
            if not 0 <= start <= MAX_SEQ:
                raise ValueError(last_event_id)
        except ValueError as exc:
            raise InvalidInput(
                f"Last-Event-ID must be an event id (a number), got {last_event_id!r}"
            ) from exc
    elif after is not None:
        start = after
    else:
        start = await guard.events.last_seq()
    state = request.app.state
    secret = request.headers.get("authorization", "").partition(" ")[2].strip()
    return StreamingResponse(
        _messages(guard, start, deployment, state.shutdown, state.heartbeat_seconds, secret),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _messages(
    guard: CanaryGuard,
    start: int,
    deployment: str | None,
    shutdown: asyncio.Event,
    heartbeat: float,
    secret: str,
) -> AsyncIterator[str]:
    follower = guard.events.follow(after_seq=start, deployment=deployment)
    checked = time.monotonic()
    closing: asyncio.Future[Any] = asyncio.ensure_future(shutdown.wait())
    pending: asyncio.Future[Any] | None = None
    try:
        yield "retry: 1000\n: connected\n\n"
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
                yield sse_message(record)
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
