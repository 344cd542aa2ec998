"""Notification channels and how their deliveries go: readable by every viewer."""

from __future__ import annotations

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
            name=status.name,
            kind=channel.notifier.kind,
            min_level=status.rule.min_level,
            deployments=list(status.rule.deployments),
            events=list(status.rule.events),
            cursor=cursors.get(status.name),
            sending=notifications.sending,
            sent=status.sent,
            failed=status.failed,
            retried=status.retried,
            retrying=status.retrying,
            last_sent_at=status.last_sent_at,
            last_error=status.last_error,
            last_error_at=status.last_error_at,
        )
        for channel, status in zip(
            notifications.channels, notifications.status.values(), strict=True
        )
    ]
