"""Events: the stored log as JSON, and a live Server-Sent Events stream resumable with
``Last-Event-ID``. Each SSE message is one CloudEvents 1.0 JSON event; its ``id`` is the log's
sequence number."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator, Field

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

# int() and pydantic both read "1_000", " 7" and "+7" as numbers; an event id is plain digits
_EVENT_ID = re.compile(r"[0-9]+")


def _plain_digits(value: object) -> object:
    """Refuse a query value that is a number only to Python's lenient parsing."""
    if isinstance(value, str) and not _EVENT_ID.fullmatch(value):
        raise ValueError(f"must be an event id (digits 0-9 only), got {value!r}")
    return value


# the bounds inside the alias: on Query() next to a validator they vanish from the OpenAPI schema
EventId = Annotated[int, Field(ge=0, le=MAX_SEQ), BeforeValidator(_plain_digits)]


def _parse_last_event_id(value: str) -> int:
    """A ``Last-Event-ID`` header as a sequence number; InvalidInput unless it is one."""
    # the length first: int() refuses strings of more than 4,300 digits with a ValueError
    if not _EVENT_ID.fullmatch(value) or len(value) > len(str(MAX_SEQ)) or int(value) > MAX_SEQ:
        shown = value if len(value) <= 40 else f"{value[:40]}..."
        raise InvalidInput(
            f"Last-Event-ID must be an event id (digits 0-9 only, at most {MAX_SEQ}), got {shown!r}"
        )
    return int(value)


def sse_message(record: EventRecord) -> str:
    data = json.dumps(record.to_cloudevent(), separators=(",", ":"))
    return f"id: {record.seq}\nevent: {record.type}\ndata: {data}\n\n"


@guarded(router, "GET", "/log", Access.READ, response_model=list[dict[str, Any]])
async def event_log(
    guard: Guard,
    deployment: str | None = None,
    after: Annotated[EventId, Query()] = 0,
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
        EventId | None,
        Query(description="replay events after this sequence number"),
    ] = None,
    last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
) -> StreamingResponse:
    """Live events. Without ``Last-Event-ID`` or ``after`` it starts with the next event."""
    # An id beyond the newest event is refused: it comes from another database (or one restored
    # from an older backup), and the stream would stay silent until the log caught up with it,
    # then resume in the middle of events the client never saw.
    newest = await guard.events.last_seq()
    if last_event_id is not None:
        start, given = _parse_last_event_id(last_event_id), "Last-Event-ID"
    elif after is not None:
        start, given = after, "after"
    else:
        start, given = newest, ""
    if start > newest:
        raise InvalidInput(
            f"{given} {start} is beyond the newest event, {newest}: is it from another "
            f"canaryguard database? Resume with an id up to {newest}, or without one for new "
            "events only"
        )
    follower = guard.events.follow(after_seq=start, deployment=deployment)

    async def render(record: EventRecord) -> str | None:
        return sse_message(record)

    return event_stream(request, guard, follower, render)
