"""Pulling outcomes from a metrics source (Prometheus) into the window store.

Every second the puller asks the server's metrics source for what each deployment with
``prometheus`` selectors counted since the last pull, and merges it into the same window store
that clients' reports go to. The monitor, snapshots, ``status``, ``record`` and the verdict read
it from there as if clients had reported it, so a deployment may use either source, or both
(they add up). Pulled outcomes are not written to the database: Prometheus keeps them, and
every replica pulls for itself.

The monitor judges a second once, so a pulled deployment is judged only as far as it has been
read (``complete_second``): before the first read after a start or after its selectors were
given, and for up to ``MAX_WAIT_SECONDS`` while Prometheus does not answer, its canary waits
instead of being judged on seconds that look empty. What a later read brings for a second
already judged (a scrape that took long, the seconds of an outage longer than the wait) is
counted in the first second not judged yet. What the first read brings (the last hour) keeps
its own seconds: it is the history the detector learns from, and a run judged before the
selectors were given is not judged on it again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from datetime import UTC, datetime

from canaryguard.domain.errors import CanaryGuardError
from canaryguard.domain.judge import run_start
from canaryguard.domain.models import Deployment
from canaryguard.engine.ports import MetricsSource
from canaryguard.engine.unit import Ports

__all__ = ["LAG_SECONDS", "MAX_WAIT_SECONDS", "MetricsPuller"]

log = logging.getLogger(__name__)

CONCURRENT_PULLS = 16  # deployments read from the metrics source at once
# samples this recent are left for the next read: a scrape's samples are stamped with its
# start and are in Prometheus once it ends, so an older one is in whole (or counted late)
LAG_SECONDS = 1.0
# how long a canary waits for reads that fail before it is judged without them (on what
# clients report, if anything): what the reads bring later counts from then on
MAX_WAIT_SECONDS = 60.0


class MetricsPuller:
    """Merges what a metrics source counted into the window store; see the module docstring."""

    def __init__(self, ports: Ports, source: MetricsSource) -> None:
        self._ports = ports
        self._source = source
        # deployments whose reads fail, since when (logged once)
        self._failing: dict[str, float] = {}
        # per deployment, the last second read in whole (the monitor judges no further)
        self._complete: dict[str, int] = {}
        self._read: set[str] = set()  # deployments read once since their selectors were given
        self._run_starts: dict[str, float] = {}  # canary run (baseline snapshot id) -> start
        # every deployment's revision as last read, and those with selectors as last decoded
        self._revisions: dict[str, int] = {}
        self._selecting: dict[str, Deployment] = {}
        # per deployment, its read in flight: a round starts none for it meanwhile, so a slow
        # read (up to the source's timeout) holds back its own deployment and no other
        self._reading: dict[str, asyncio.Task[int]] = {}
        self._limit = asyncio.Semaphore(CONCURRENT_PULLS)
        self.pulled = 0  # per-second cells merged, since start

    def waiting(self, deployment: Deployment) -> str:
        """What keeps the metrics source's outcomes of ``deployment`` from the monitor: its
        first read pending, or reads failing (waited for, then judged without); "" when
        reads succeed or it is not read from a source."""
        if deployment.config.prometheus is None:
            return ""
        since = self._failing.get(deployment.name)
        if since is not None:
            failing = f"reading Prometheus ({self._source.url}) fails since {_iso(since)}"
            if self._ports.clock.now().timestamp() - since >= MAX_WAIT_SECONDS:
                return f"{failing}; judged without it since {_iso(since + MAX_WAIT_SECONDS)}"
            return (
                f"{failing}: judged on once a read succeeds, or without it after "
                f"{MAX_WAIT_SECONDS:g} s"
            )
        if deployment.name not in self._complete:
            return f"waiting for the first read of Prometheus ({self._source.url})"
        return ""

    def complete_second(self, deployment: Deployment) -> int | None:
        """The last second of ``deployment`` read in whole; None when it is not read from
        the metrics source (every settled second of it is complete); -1 before its first
        read."""
        if deployment.config.prometheus is None:
            return None
        return self._complete.get(deployment.name, -1)

    async def run(self, every: float = 1.0) -> None:
        """Pull forever (until cancelled): every ``every`` seconds a read starts for each
        deployment with selectors whose last read has ended, without waiting for the others'
        reads; a failed round is logged and the next one runs. Cancelled, it cancels the reads
        in flight."""
        try:
            while True:
                try:
                    await self._start_round()
                except Exception:
                    log.exception("pulling metrics failed")
                await asyncio.sleep(every)
        finally:
            reads = list(self._reading.values())
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)

    async def pull(self) -> int:
        """One round over every deployment with selectors, waited for; how many cells it
        merged (a deployment whose read from an earlier round is still in flight is left to
        that read; a read that fails unexpectedly is logged and counts none)."""
        ended = await asyncio.gather(*await self._start_round(), return_exceptions=True)
        return sum(merged for merged in ended if isinstance(merged, int))

    async def _start_round(self) -> list[asyncio.Task[int]]:
        runs: dict[str, float] = {}
        async with self._ports.store.read() as tx:
            # every deployment with selectors, with a canary or not: status, snapshots, the
            # baseline a canary's start records and ``record`` read the same seconds. Only the
            # rows whose revision moved are decoded again (selectors change only through a
            # change, which raises the revision): decoding 10,000 rows costs ~0.6 s a second
            revisions = await tx.deployments.revisions()
            moved = [n for n, r in revisions.items() if self._revisions.get(n) != r]
            for d in await tx.deployments.many(moved):
                if d.config.prometheus:
                    self._selecting[d.name] = d
                else:
                    self._selecting.pop(d.name, None)
            for gone in set(self._selecting) - set(revisions):
                del self._selecting[gone]
            self._revisions = revisions
            deployments = sorted(self._selecting.values(), key=lambda d: d.name)
            for d in deployments:
                run = d.run_id
                if d.canary is None or run is None:
                    continue
                if run not in self._run_starts:
                    sealed = await tx.snapshots.get(run)
                    started, _ = run_start(d, sealed.info if sealed is not None else None)
                    self._run_starts[run] = started.timestamp()
                runs[run] = self._run_starts[run]
        self._run_starts = runs
        names = {d.name for d in deployments}
        for name in set(self._reading) - names:
            # selectors taken away while a read was in flight: what it would bring, and its
            # marks of a first read done, belong to selectors that are gone
            self._reading[name].cancel()
        self._source.forget(names)
        for name in set(self._complete) - names:
            # selectors taken away: the monitor judges every settled second meanwhile, so the
            # next first read starts afresh (its seconds are history, not judged again)
            del self._complete[name]
        self._read &= names
        for name in set(self._failing) - names:
            del self._failing[name]
        now = self._ports.clock.now().timestamp()
        new_reads = []
        for deployment in deployments:
            if deployment.name in self._reading:
                continue
            since = runs.get(deployment.run_id or "")
            read = asyncio.create_task(self._limited(deployment, now, since))
            self._reading[deployment.name] = read
            read.add_done_callback(functools.partial(self._read_ended, deployment.name))
            new_reads.append(read)
        return new_reads

    async def _limited(self, deployment: Deployment, now: float, since: float | None) -> int:
        async with self._limit:
            return await self._pull_one(deployment, now, since)

    def _read_ended(self, name: str, read: asyncio.Task[int]) -> None:
        if self._reading.get(name) is read:
            del self._reading[name]
        if read.cancelled():
            return
        if (error := read.exception()) is not None:
            log.error("%s: pulling metrics failed", name, exc_info=error)
            return
        self.pulled += read.result()

    async def _pull_one(self, deployment: Deployment, now: float, since: float | None) -> int:
        selectors = deployment.config.prometheus
        assert selectors is not None  # noqa: S101 - only deployments with selectors come here
        until = now - LAG_SECONDS
        try:
            cells = await self._source.pull(
                deployment.name, selectors, now=now, until=until, canary_since=since
            )
        except CanaryGuardError as exc:
            since_failing = self._failing.setdefault(deployment.name, now)
            if since_failing == now:
                log.warning("%s: reading metrics failed: %s", deployment.name, exc)
            elif now - since_failing >= MAX_WAIT_SECONDS:
                # waited long enough: the seconds go on being judged without what Prometheus
                # holds for them, which counts from the first second not judged when it comes
                self._complete[deployment.name] = max(
                    self._complete.get(deployment.name, -1), math.floor(until) - 1
                )
            return 0
        if self._failing.pop(deployment.name, None) is not None:
            log.warning("%s: reading metrics works again", deployment.name)
        judged = self._complete.get(deployment.name)
        # the first second not judged yet; the first read's seconds keep their own (history,
        # or seconds judged while the reads failed, which are not judged again)
        first_open = judged + 1 if judged is not None and deployment.name in self._read else -1
        self._read.add(deployment.name)
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
        self._complete[deployment.name] = max(
            self._complete.get(deployment.name, -1), math.floor(until) - 1
        )
        return len(cells)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
