"""``AsyncClient``: the client for asyncio applications.

``assign`` and ``record`` never touch the network in either client, so they are the same plain
(non-blocking) calls here. Starting, flushing and closing do network work; here they are
awaitable and run in a worker thread, so the event loop never waits on a socket. Following the
state and sending outcomes happen on the client's own threads, as in ``Client``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from canaryguard.client._client import Client, ClientStats
from canaryguard.client._state import Assignment

__all__ = ["AsyncClient"]


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        deployments: Iterable[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        """Like ``Client``; call ``await start()`` (or use ``async with``) before assigning."""
        self._client = Client(
            base_url, token, deployments, cache_dir=cache_dir, start=False, **options
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._client.start)

    def assign(
        self,
        deployment: str,
        *,
        user_id: str | None = None,
        ip: str | None = None,
        attributes: Mapping[str, str] | None = None,
        groups: Collection[str] = (),
    ) -> Assignment:
        return self._client.assign(
            deployment, user_id=user_id, ip=ip, attributes=attributes, groups=groups
        )

    def record(self, assignment: Assignment, *, ok: bool, latency_ms: float) -> None:
        self._client.record(assignment, ok=ok, latency_ms=latency_ms)

    @asynccontextmanager
    async def track(self, assignment: Assignment) -> AsyncIterator[None]:
        """Time the block (awaits included); an exception counts as an error."""
        with self._client.track(assignment):
            yield

    def revision(self, deployment: str) -> int | None:
        return self._client.revision(deployment)

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    async def flush(self) -> None:
        await asyncio.to_thread(self._client.flush)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
