"""The state stream reads and renders a committed state once for all open streams."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from canaryguard.api.routes_state import SharedStates
from canaryguard.engine.app import CanaryGuard
from tests.helpers import seed

NAME = "shop/security"


class CountingDeployments:
    def __init__(self, guard: CanaryGuard) -> None:
        self.reads = 0
        self._guard = guard

    async def get(self, name: str) -> Any:
        self.reads += 1
        await asyncio.sleep(0.01)  # a read in flight while the other streams ask
        return await self._guard.deployments.get(name)


class Guard:
    def __init__(self, deployments: CountingDeployments) -> None:
        self.deployments = deployments


async def test_a_hundred_streams_woken_by_one_change_read_the_state_once(
    app: CanaryGuard,
) -> None:
    await seed(app)
    counting = CountingDeployments(app)
    shared = SharedStates(cast(CanaryGuard, Guard(counting)))
    states = await asyncio.gather(*(shared.after(NAME, 7) for _ in range(100)))
    assert counting.reads == 1
    assert {state.revision for state in states} == {states[0].revision}


async def test_a_later_change_is_read_again(app: CanaryGuard) -> None:
    await seed(app)
    counting = CountingDeployments(app)
    shared = SharedStates(cast(CanaryGuard, Guard(counting)))
    await shared.after(NAME, 7)
    await shared.after(NAME, 8)
    assert counting.reads == 2
