"""Events: the stored log as JSON, and a live Server-Sent Events stream resumable with
``Last-Event-ID``. Each SSE message is one CloudEvents 1.0 JSON event; its ``id`` is the log's
sequence number."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from canaryguard.api.auth import get_guard, guarded
from canaryguard.api.schemas import MAX_SEQ
from canaryguard.api.sse import event_stream
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
    follower = guard.events.follow(after_seq=start, deployment=deployment)

    async def render(record: EventRecord) -> str | None:
        return sse_message(record)

    return event_stream(request, guard, follower, render)
