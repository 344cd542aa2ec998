"""Pulling outcomes from a metrics source (Prometheus) into the window store.

Every second the puller asks the server's metrics source for what each deployment with
``prometheus`` selectors counted since the last pull, and merges it into the same window store
that clients' reports go to. The monitor, snapshots, ``status``, ``record`` and the verdict read
it from there as if clients had reported it, so a deployment may use either source, or both
(they add up). Pulled outcomes are not written to the database: Prometheus keeps them, and
every replica pulls for itself.
"""

from __future__ import annotations

import asyncio
import logging

from canaryguard.domain.errors import CanaryGuardError
from canaryguard.domain.models import Deployment
from canaryguard.engine.ports import MetricsSource
from canaryguard.engine.unit import Ports

__all__ = ["MetricsPuller"]

log = logging.getLogger(__name__)

CONCURRENT_PULLS = 16  # deployments read from the metrics source at once


class MetricsPuller:
    """Merges what a metrics source counted into the window store; see the module docstring."""

    def __init__(self, ports: Ports, source: MetricsSource) -> None:
        self._ports = ports
        self._source = source
        self._failing: set[str] = set()  # deployments whose last pull failed (logged once)
        self.pulled = 0  # per-second cells merged, since start

    async def run(self, every: float = 1.0) -> None:
        """Pull forever (until cancelled); a failed round is logged and the next one runs."""
        while True:
            try:
                await self.pull()
            except Exception:
                log.exception("pulling metrics failed")
            await asyncio.sleep(every)

    async def pull(self) -> int:
        """One round over every deployment with selectors; how many cells it merged."""
        async with self._ports.store.read() as tx:
            deployments = [d for d in await tx.deployments.all() if d.config.prometheus]
        self._source.forget({d.name for d in deployments})
        now = self._ports.clock.now().timestamp()
        limit = asyncio.Semaphore(CONCURRENT_PULLS)

        async def one(deployment: Deployment) -> int:
            async with limit:
                return await self._pull_one(deployment, now)

        merged = sum(await asyncio.gather(*(one(d) for d in deployments)))
        self.pulled += merged
        return merged

    async def _pull_one(self, deployment: Deployment, now: float) -> int:
        selectors = deployment.config.prometheus
        assert selectors is not None  # noqa: S101 - only deployments with selectors come here
        try:
            cells = await self._source.pull(deployment.name, selectors, now=now)
        except CanaryGuardError as exc:
            if deployment.name not in self._failing:
                log.warning("%s: reading metrics failed: %s", deployment.name, exc)
            self._failing.add(deployment.name)
            return 0
        if deployment.name in self._failing:
            log.info("%s: reading metrics works again", deployment.name)
            self._failing.discard(deployment.name)
        windows = self._ports.windows
        for (variant, second), stats in cells.items():
            windows.add(
                # revision 0: a metric does not say which revision served it; the monitor
                # counts a run's seconds from its start instead
                (deployment.name, 0, variant, second),
                requests=stats.requests,
                errors=stats.errors,
                latency_sum_ms=stats.latency_sum_ms,
                latency_max_ms=stats.latency_max_ms,
                histogram=stats.histogram,
                flush=False,
            )
        return len(cells)
