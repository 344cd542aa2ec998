"""Recording outcomes per deployment, revision, variant and second, and summarising them.

Ingestion merges a batch into the in-memory window store and answers; a flush (about every
second, and on close) appends what was merged since the last one to the database as delta rows,
with the batch ids, in one transaction. Telemetry, not operations: it is not audited, and a crash
loses at most the observations accepted since the last flush (clients keep no copy of a batch
the server accepted).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import InvalidInput, NotFound
from canaryguard.domain.judge import snapshot_of
from canaryguard.domain.models import Deployment, MetricsSnapshot, Observation
from canaryguard.domain.observation_batch import ObservationColumns
from canaryguard.domain.windows import RollupKey, SecondStats, WindowStore
from canaryguard.engine.unit import Ports

__all__ = ["MAX_BATCH", "IngestResult", "ObservationService", "metrics_snapshot"]

MAX_BATCH = 10_000
PAST_LIMIT = timedelta(days=7)  # older seconds are history, not telemetry
FUTURE_LIMIT = timedelta(minutes=5)  # clock skew a client may have
BATCH_MEMORY = timedelta(hours=1)  # how long a batch id is remembered against retries
HISTORY = timedelta(days=7)  # how long the database keeps per-second rows
PEER_SECONDS = 10.0  # another replica that flushed this recently is taking reports too
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicate: bool


def metrics_snapshot(
    windows: WindowStore, deployment: Deployment, now: datetime
) -> MetricsSnapshot:
    """Both variants over the deployment's evaluation window ending at ``now``."""
    window = deployment.config.window_seconds
    until = int(now.timestamp())
    totals = windows.totals(deployment.name, since=until - window + 1, until=until)
    return snapshot_of(totals, window_seconds=window, until=now)


class ObservationService:
    """Ingestion into the window store, its flush to the database, and summaries."""

    def __init__(self, ports: Ports) -> None:
        self._ports = ports
        self._windows = ports.windows
        self.node = secrets.token_hex(8)  # this replica's name on the rows it writes
        self._known: set[str] = set()  # deployments seen to exist (they are never deleted)
        self._batches: dict[str, datetime] = {}  # batch ids merged here, for retries
        self._unflushed_batches: list[str] = []
        self._flush_seq = 0  # this replica's flushes so far
        # a flush that raised: its rows may or may not have been committed (a connection can
        # drop after the commit), so it is retried as it was, under its number, only if the
        # database does not have that number yet
        self._retry: tuple[int, dict[RollupKey, SecondStats], list[str]] | None = None
        self._cursors: dict[str, int] = {}  # other replicas' flushes merged here, by node
        self._peers: dict[str, float] = {}  # other replicas seen flushing, by node: when

    async def record(
        self,
        deployment: str,
        variant: Variant | str,
        *,
        at: datetime,
        requests: int,
        errors: int,
        latency_sum_ms: float,
        latency_max_ms: float,
        histogram: dict[int, int] | None = None,
        revision: int | None = None,
    ) -> None:
        """Merge one second's aggregate for one variant (a convenience over ``ingest``)."""
        value = {
            "deployment": deployment,
            "variant": variant,
            "second": int(at.timestamp()),
            "revision": revision,
            "requests": requests,
            "errors": errors,
            "latency_sum_ms": latency_sum_ms,
            "latency_max_ms": latency_max_ms,
            "histogram": histogram or {},
        }
        try:
            observation = Observation.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidInput(f"observation 0: {problems}") from exc
        await self.ingest([observation])

    async def ingest(
        self, observations: Sequence[Observation], *, batch_id: str | None = None
    ) -> IngestResult:
        """Merge a batch; with a ``batch_id``, a batch seen before is accepted and not counted
        again (clients retry). The whole batch is refused, naming the entry, when one is bad."""
        for index, observation in enumerate(observations):
            problem = observation.inconsistency()
            if problem is not None:
                raise InvalidInput(f"observation {index}: {problem}")
        seconds = [observation.second for observation in observations]
        names = {observation.deployment for observation in observations}
        if await self._admit(len(observations), seconds, names, batch_id):
            return IngestResult(accepted=len(observations), duplicate=True)
        self._windows.add_observations(observations)
        return IngestResult(accepted=len(observations), duplicate=False)

    async def ingest_columns(self, batch: ObservationColumns) -> IngestResult:
        """Merge a decoded compact batch (``domain.observation_batch``): the same checks and
        the same result as ``ingest``, at a fraction of the cost per entry."""
        names = {batch.names[index] for index in set(batch.deployment)}
        if await self._admit(len(batch), batch.second, names, batch.batch_id):
            return IngestResult(accepted=len(batch), duplicate=True)
        self._windows.add_columns(batch)
        return IngestResult(accepted=len(batch), duplicate=False)

    async def _admit(
        self, count: int, seconds: Sequence[int], names: set[str], batch_id: str | None
    ) -> bool:
        """Check what a batch's entries share (their number, seconds, deployments and batch
        id); True when the batch was merged before."""
        if count > MAX_BATCH:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH} observations, got {count}")
        if batch_id is not None and not _BATCH_ID.match(batch_id):
            raise InvalidInput("batch_id is 1-64 letters, digits, '_' or '-'")
        now = self._ports.clock.now()
        earliest, latest = (now - PAST_LIMIT).timestamp(), (now + FUTURE_LIMIT).timestamp()
        if seconds and not (earliest <= min(seconds) and max(seconds) <= latest):
            index = next(i for i, s in enumerate(seconds) if not earliest <= s <= latest)
            raise InvalidInput(
                f"observation {index}: second {seconds[index]} is more than 7 days old "
                "or more than 5 minutes ahead of the server's clock"
            )
        await self._check_known(names)
        return batch_id is not None and await self._seen(batch_id, now)

    async def _check_known(self, names: set[str]) -> None:
        unknown = names - self._known
        if not unknown:
            return
        async with self._ports.store.read() as tx:
            existing = await tx.deployments.existing(unknown)
        self._known |= existing
        missing = unknown - existing
        if missing:
            raise NotFound(f"no deployment named {', '.join(repr(n) for n in sorted(missing))}")

    async def _seen(self, batch_id: str, now: datetime) -> bool:
        if batch_id in self._batches:
            return True
        self._batches[batch_id] = now  # claimed before the await: a concurrent twin is a retry
        try:
            async with self._ports.store.read() as tx:
                if await tx.observations.seen_batch(batch_id):
                    return True  # merged before a restart, or by another replica
        except BaseException:
            del self._batches[batch_id]  # not merged: the client's retry must be taken
            raise
        self._unflushed_batches.append(batch_id)
        return False

    async def flush(self) -> int:
        """Append what was merged since the last flush to the database; how many rows.

        A flush that fails is kept and tried again first, exactly once in the database: its
        number is recorded with its rows in one transaction, so the retry writes nothing when
        the failed attempt did commit."""
        if self._retry is not None:
            number, deltas, batches = self._retry
            await self._write(number, deltas, batches, unless_done=True)
            self._retry = None
            self._flush_seq = number
        deltas = self._windows.take_unflushed()
        batches, self._unflushed_batches = self._unflushed_batches, []
        if not deltas and not batches:
            return 0
        number = self._flush_seq + 1
        try:
            await self._write(number, deltas, batches)
        except BaseException:
            self._retry = (number, deltas, batches)
            raise
        self._flush_seq = number
        return len(deltas)

    async def _write(
        self,
        number: int,
        deltas: dict[RollupKey, SecondStats],
        batches: list[str],
        *,
        unless_done: bool = False,
    ) -> None:
        async with self._ports.store.write(exclusive=False) as tx:
            if unless_done and (await tx.observations.nodes()).get(self.node, 0) >= number:
                return  # the failed attempt had committed after all
            now = self._ports.clock.now()
            await tx.observations.append(
                list(deltas.items()), node=self.node, flush_seq=number, at=now
            )
            await tx.observations.remember_batches(batches, at=now)

    async def load(self) -> int:
        """Fill the window store from the database (at start); how many rows were read."""
        since = int(self._ports.clock.now().timestamp()) - self._windows.horizon_seconds
        async with self._ports.store.read() as tx:  # one view: the rows and the flush numbers
            rows = await tx.observations.since(second=since)
            self._cursors = await tx.observations.nodes()
        self._merge(rows)
        return len(rows)

    async def follow(self) -> int:
        """Merge what other replicas flushed since the last look (called every second by the
        server), so every replica's window store holds the whole fleet's observations, a flush
        or so late; how many rows were merged.

        Each replica's flushes are numbered and committed one after the other, and its last
        number is written in the same transaction as its rows, so the rows up to a number read
        here are all committed: each is merged exactly once."""
        async with self._ports.store.read() as tx:
            latest = await tx.observations.nodes()
            rows = []
            for node, number in latest.items():
                seen = self._cursors.get(node, 0)
                if node != self.node and number > seen:
                    rows += await tx.observations.flushed(node, after=seen, upto=number)
        seen_at = self._ports.clock.monotonic()
        for node, number in latest.items():
            if node != self.node and number > self._cursors.get(node, 0):
                self._cursors[node] = number
                self._peers[node] = seen_at
        self._merge(rows)
        return len(rows)

    @property
    def peers_active(self) -> bool:
        """Whether another replica flushed observations in the last ``PEER_SECONDS``."""
        horizon = self._ports.clock.monotonic() - PEER_SECONDS
        return any(at >= horizon for at in self._peers.values())

    def _merge(self, rows: Sequence[tuple[RollupKey, SecondStats]]) -> None:
        for key, stats in rows:
            self._windows.add(
                key,
                requests=stats.requests,
                errors=stats.errors,
                latency_sum_ms=stats.latency_sum_ms,
                latency_max_ms=stats.latency_max_ms,
                histogram=stats.histogram,
                flush=False,  # already in the database
            )

    async def housekeeping(self) -> None:
        """Forget batch ids past the retry horizon and rows past the history horizon, and
        seconds past the window store's horizon (called periodically by the server)."""
        now = self._ports.clock.now()
        horizon = now - BATCH_MEMORY
        self._batches = {b: at for b, at in self._batches.items() if at >= horizon}
        self._windows.prune(int(now.timestamp()) - self._windows.horizon_seconds)
        async with self._ports.store.write(exclusive=False) as tx:
            await tx.observations.forget_batches(before=horizon)
            await tx.observations.forget_nodes(before=now - HISTORY)
            await tx.observations.prune(before_second=int((now - HISTORY).timestamp()))

    async def summary(self, deployment: str) -> MetricsSnapshot:
        """Both variants over the deployment's evaluation window, ending now."""
        async with self._ports.store.read() as tx:
            current = await tx.deployments.get(deployment)
        if current is None:
            raise NotFound(f"no deployment named {deployment!r}")
        return metrics_snapshot(self._windows, current, self._ports.clock.now())
