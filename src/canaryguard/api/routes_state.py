"""The compact state stream for client SDKs: the current state of the watched deployments when
a client connects, then each new state as it commits. Clients need nothing else to follow
changes; policy documents are fetched once per version (they are immutable)."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from canaryguard.api.auth import get_guard, guarded
from canaryguard.api.sse import event_stream
from canaryguard.domain.access import Access
from canaryguard.domain.errors import NotFound
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import Deployment
from canaryguard.domain.rollout import check_deployment_name
from canaryguard.engine.app import CanaryGuard

__all__ = ["router", "state_message"]

router = APIRouter(prefix="/api/v1/state", tags=["deployments"])
Guard = Annotated[CanaryGuard, Depends(get_guard)]


def state_message(deployment: Deployment, seq: int) -> str:
    """One SSE message: who gets what in ``deployment``, at its revision."""
    body = deployment.model_dump(
        mode="json", include={"name", "revision", "state", "split", "stable", "canary"}
    )
    return f"id: {seq}\nevent: state\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


class SharedStates:
    """Each committed state read and rendered once, whatever the number of open streams: a
    change wakes every stream at once, and a thousand reads of one row would make the last
    client wait for all of them."""

    def __init__(self, guard: CanaryGuard, capacity: int = 256) -> None:
        self._guard = guard
        self._capacity = capacity
        self._rendered: OrderedDict[tuple[str, int], asyncio.Future[Deployment]] = OrderedDict()

    async def after(self, name: str, seq: int) -> Deployment:
        """The deployment as of (at least) event ``seq``."""
        key = (name, seq)
        future = self._rendered.get(key)
        if future is None:
            future = self._rendered[key] = asyncio.ensure_future(self._guard.deployments.get(name))
            while len(self._rendered) > self._capacity:
                self._rendered.popitem(last=False)
        try:
            return await asyncio.shield(future)
        except Exception:
            self._rendered.pop(key, None)  # a failed read is not shared with later streams
            raise

    @classmethod
    def of(cls, request: Request, guard: CanaryGuard) -> SharedStates:
        shared = getattr(request.app.state, "shared_states", None)
        if shared is None:
            shared = request.app.state.shared_states = cls(guard)
        return shared


@guarded(
    router,
    "GET",
    "",
    Access.STATE,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "deployment states"}},
)
async def state_stream(
    request: Request,
    guard: Guard,
    deployment: Annotated[list[str], Query(min_length=1, max_length=100)],
) -> StreamingResponse:
    """The current state of each named deployment, then every newer one as it commits. A name
    that is no deployment yet is watched too: its state comes when it is created."""
    for name in deployment:
        check_deployment_name(name)  # a name no deployment can have would be watched forever
    start = await guard.events.last_seq()  # before the states: a change in between is sent again
    sent: dict[str, int] = {}
    opening = []
    for name in dict.fromkeys(deployment):
        try:
            current = await guard.deployments.get(name)
        except NotFound:  # watched anyway: its state is sent once it is created
            sent[name] = 0
            continue
        sent[name] = current.revision
        opening.append(state_message(current, start))

    shared = SharedStates.of(request, guard)

    async def render(record: EventRecord) -> str | None:
        name = record.deployment
        if name not in sent or record.revision is None or record.revision <= sent[name]:
            return None
        current = await shared.after(name, record.seq)
        if current.revision <= sent[name]:
            return None
        sent[name] = current.revision
        return state_message(current, record.seq)

    return event_stream(
        request, guard, guard.events.follow(after_seq=start), render, opening=opening
    )
