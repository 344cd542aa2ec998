"""Notification channels and how their deliveries go: readable by every viewer."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends

from canaryguard.api.auth import get_guard, guarded
from canaryguard.api.schemas import ChannelOut
from canaryguard.domain.access import Access
from canaryguard.engine.app import CanaryGuard

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Guard = Annotated[CanaryGuard, Depends(get_guard)]


@guarded(
    router,
    "GET",
    "/notifications",
    Access.READ,
    response_model=list[ChannelOut],
    tags=["notifications"],
)
async def list_channels(guard: Guard) -> list[ChannelOut]:
    """Every channel of ``serve --notifications FILE``: its rule, cursor and this replica's
    deliveries (no secret or target URL; a last error names the receiver's host and answer)."""
    notifications = guard.notifications
    cursors = await notifications.cursors()
    return [
        ChannelOut(
            # this replica's counts, with the cursor as the database has it (the leader's)
            **{**asdict(notifications.status[channel.name]), "cursor": cursors.get(channel.name)},
            kind=channel.notifier.kind,
            min_level=channel.rule.min_level,
            deployments=list(channel.rule.deployments),
            events=list(channel.rule.events),
            sending=notifications.sending,
        )
        for channel in notifications.channels
    ]
