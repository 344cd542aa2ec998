"""Pulling outcomes from a metrics source (Prometheus) into the window store.

Every second the puller asks the server's metrics source for what each deployment with
``prometheus`` selectors counted since the last pull, and merges it into the same window store
that clients' reports go to. The monitor, snapshots, ``status``, ``record`` and the verdict read
it from there as if clients had reported it, so a deployment may use either source, or both
(they add up). Pulled outcomes are not written to the database: Prometheus keeps them, and
every replica pulls for itself.

The monitor judges a second once, so a pulled deployment is judged only as far as it has been
read (``complete_second``): while Prometheus does not answer, or before the first read after a
start, its canary waits instead of being judged on seconds that look empty. What a read brings
for a second already judged (a scrape that took long, a read after an outage that Prometheus
got late) is counted in the first second not judged yet, so nothing read is lost to the
detector.
"""

from __future__ import annotations

import asyncio
import logging
import math

from canaryguard.domain.errors import CanaryGuardError
from canaryguard.domain.judge import run_start
from canaryguard.domain.models import Deployment
from canaryguard.engine.ports import MetricsSource
from canaryguard.engine.unit import Ports

__all__ = ["LAG_SECONDS", "MetricsPuller"]

log = logging.getLogger(__name__)

CONCURRENT_PULLS = 16  # deployments read from the metrics source at once
# samples this recent are left for the next read: a scrape's samples are stamped with its
# start and are in Prometheus once it ends, so an older one is in whole (or counted late)
LAG_SECONDS = 1.0


class MetricsPuller:
    """Merges what a metrics source counted into the window store; see the module docstring."""

    def __init__(self, ports: Ports, source: MetricsSource) -> None:
        self._ports = ports
        self._source = source
        self._failing: set[str] = set()  # deployments whose last pull failed (logged once)
        # per deployment, the last second read in whole (the monitor judges no further)
        self._complete: dict[str, int] = {}
        self._run_starts: dict[str, float] = {}  # canary run (baseline snapshot id) -> start
        self.pulled = 0  # per-second cells merged, since start

    def complete_second(self, deployment: Deployment) -> int | None:
        """The last second of ``deployment`` read in whole; None when it is not read from
        the metrics source (every settled second of it is complete); -1 before its first
        read."""
        if deployment.config.prometheus is None:
            return None
        return self._complete.get(deployment.name, -1)

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
        runs: dict[str, float] = {}
        async with self._ports.store.read() as tx:
            deployments = [d for d in await tx.deployments.all() if d.config.prometheus]
            for d in deployments:
                run = d.baseline_snapshot_id
                if d.canary is None or run is None:
                    continue
                if run not in self._run_starts:
                    sealed = await tx.snapshots.get(run)
                    started, _ = run_start(d, sealed.info if sealed is not None else None)
                    self._run_starts[run] = started.timestamp()
                runs[run] = self._run_starts[run]
        self._run_starts = runs
        self._source.forget({d.name for d in deployments})
        now = self._ports.clock.now().timestamp()
        limit = asyncio.Semaphore(CONCURRENT_PULLS)

        async def one(deployment: Deployment) -> int:
            since = runs.get(deployment.baseline_snapshot_id or "")
            async with limit:
                return await self._pull_one(deployment, now, since)

        merged = sum(await asyncio.gather(*(one(d) for d in deployments)))
        self.pulled += merged
        return merged

    async def _pull_one(self, deployment: Deployment, now: float, since: float | None) -> int:
        selectors = deployment.config.prometheus
        assert selectors is not None  # noqa: S101 - only deployments with selectors come here
        until = now - LAG_SECONDS
        try:
            cells = await self._source.pull(
                deployment.name, selectors, now=now, until=until, canary_since=since
            )
        except CanaryGuardError as exc:
            if deployment.name not in self._failing:
                log.warning("%s: reading metrics failed: %s", deployment.name, exc)
            self._failing.add(deployment.name)
            return 0
        if deployment.name in self._failing:
            log.warning("%s: reading metrics works again", deployment.name)
            self._failing.discard(deployment.name)
        judged = self._complete.get(deployment.name)
        first_open = -1 if judged is None else judged + 1  # the first second not judged yet
        windows = self._ports.windows
        for (variant, second), stats in cells.items():
            windows.add(
                # revision 0: a metric does not say which revision served it; the monitor
                # counts a run's seconds from its start instead (and the source leaves out
                # the canary's counts from before it). A second the monitor may have judged
                # already is counted in the first one it has not
                (deployment.name, 0, variant, max(second, first_open)),
                requests=stats.requests,
                errors=stats.errors,
                latency_sum_ms=stats.latency_sum_ms,
                latency_max_ms=stats.latency_max_ms,
                histogram=stats.histogram,
                flush=False,
            )
        # every sample up to ``until`` is read: the seconds before its own are whole
        self._complete[deployment.name] = max(first_open - 1, math.floor(until) - 1)
        return len(cells)
