"""Recent outcomes per deployment, second, revision and variant, in memory.

Ingestion merges every reported observation here; the monitor reads settled seconds from it
each tick, and snapshots summarise their evaluation window from it. What was merged since the
last flush is also kept as *deltas*, which the engine appends to the database (history, other
replicas, restarts) about once a second. Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from canaryguard.domain.assignment import Variant
from canaryguard.domain.histogram import quantile
from canaryguard.domain.models import Observation
from canaryguard.domain.observation_batch import ObservationColumns

__all__ = ["RollingWindow", "RollupKey", "SecondStats", "WindowStore", "WindowTotals"]

# (deployment, revision, variant, second); revision 0 when the client did not name one
RollupKey = tuple[str, int, Variant, int]


@dataclass(slots=True)
class SecondStats:
    """One variant's outcomes in one second (or the sum over several)."""

    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        requests: int,
        errors: int,
        latency_sum_ms: float,
        latency_max_ms: float,
        histogram: Mapping[int, int],
    ) -> None:
        self.requests += requests
        self.errors += errors
        self.latency_sum_ms += latency_sum_ms
        self.latency_max_ms = max(self.latency_max_ms, latency_max_ms)
        mine = self.histogram
        for bucket, count in histogram.items():
            mine[bucket] = mine.get(bucket, 0) + count

    def merge(self, other: SecondStats) -> None:
        self.add(
            other.requests,
            other.errors,
            other.latency_sum_ms,
            other.latency_max_ms,
            other.histogram,
        )


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """A variant's outcomes summed over a window, with latency percentiles from the
    histograms (upper bucket edges: at most 10 % above the true value)."""

    requests: int
    errors: int
    latency_sum_ms: float
    latency_max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, stats: SecondStats) -> WindowTotals:
        h = stats.histogram
        return cls(
            requests=stats.requests,
            errors=stats.errors,
            latency_sum_ms=stats.latency_sum_ms,
            latency_max_ms=stats.latency_max_ms,
            p50_ms=quantile(h, 0.50),
            p90_ms=quantile(h, 0.90),
            p95_ms=quantile(h, 0.95),
            p99_ms=quantile(h, 0.99),
        )


class WindowStore:
    """Per-second outcomes of the last ``horizon_seconds`` (older seconds are pruned).

    Reported observations are merged once, into *pending* cells keyed like the database's delta
    rows; reads (and the flush) first fold the pending cells into the per-second store and into
    the unflushed deltas. Many clients report the same deployment, variant and second, so folding
    costs a merge per cell where merging into both at once cost two per reported entry (the
    ingestion endpoint's largest cost after parsing).
    """

    def __init__(self, horizon_seconds: int = 6 * 3600) -> None:
        self.horizon_seconds = horizon_seconds
        # deployment -> second -> (revision, variant) -> stats
        self._seconds: dict[str, dict[int, dict[tuple[int, Variant], SecondStats]]] = {}
        self._pending: dict[RollupKey, SecondStats] = {}
        self._unflushed: dict[RollupKey, SecondStats] = {}

    def add(
        self,
        key: RollupKey,
        *,
        requests: int,
        errors: int,
        latency_sum_ms: float,
        latency_max_ms: float,
        histogram: Mapping[int, int],
        flush: bool = True,
    ) -> None:
        """Merge one observation; ``flush=False`` for data that came from the database."""
        if flush:
            cell = self._pending.get(key)
            if cell is None:
                cell = self._pending[key] = SecondStats()
        else:
            cell = self._cell(key)
        cell.add(requests, errors, latency_sum_ms, latency_max_ms, histogram)

    def _cell(self, key: RollupKey) -> SecondStats:
        """The per-second store's cell for ``key`` (made empty when missing)."""
        deployment, revision, variant, second = key
        cells = self._seconds.setdefault(deployment, {}).setdefault(second, {})
        cell = cells.get((revision, variant))
        if cell is None:
            cell = cells[(revision, variant)] = SecondStats()
        return cell

    def add_observations(self, observations: Iterable[Observation]) -> None:
        """Merge reported observations (``add`` inlined: ingestion's hot loop)."""
        pending = self._pending
        for o in observations:
            key = (o.deployment, o.revision or 0, o.variant, o.second)
            cell = pending.get(key)
            if cell is None:
                cell = pending[key] = SecondStats()
            cell.requests += o.requests
            cell.errors += o.errors
            cell.latency_sum_ms += o.latency_sum_ms
            if o.latency_max_ms > cell.latency_max_ms:  # noqa: PLR1730 - no call in the hot loop
                cell.latency_max_ms = o.latency_max_ms
            histogram = cell.histogram
            for bucket, count in o.histogram.items():
                histogram[bucket] = histogram.get(bucket, 0) + count

    def add_columns(self, batch: ObservationColumns) -> None:
        """Merge a decoded compact batch (checked by ``observation_batch.decode``)."""
        pending = self._pending
        variants = (Variant.STABLE, Variant.CANARY)
        # the keys are built by C loops (map, zip), not by Python code per entry
        keys = zip(
            map(batch.names.__getitem__, batch.deployment),
            batch.revision,
            map(variants.__getitem__, batch.variant),
            batch.second,
            strict=True,
        )
        pairs_left = zip(batch.buckets.tolist(), batch.counts.tolist(), strict=True)
        for key, pairs, requests, errors, total, peak in zip(
            keys,
            batch.pairs,
            batch.requests,
            batch.errors,
            batch.latency_sum,
            batch.latency_max,
            strict=True,
        ):
            cell = pending.get(key)
            if cell is None:
                # the first entry for a cell becomes it: its histogram is built in C, unless
                # the row names a bucket twice (its pairs add up, as on the merge path below)
                chunk = list(islice(pairs_left, pairs))
                histogram = dict(chunk)
                if len(histogram) != pairs:
                    histogram = {}
                    for bucket, count in chunk:
                        histogram[bucket] = histogram.get(bucket, 0) + count
                pending[key] = SecondStats(requests, errors, total, peak, histogram)
                continue
            cell.requests += requests
            cell.errors += errors
            cell.latency_sum_ms += total
            if peak > cell.latency_max_ms:  # noqa: PLR1730 - no call in the hot loop
                cell.latency_max_ms = peak
            histogram = cell.histogram
            for bucket, count in islice(pairs_left, pairs):
                histogram[bucket] = histogram.get(bucket, 0) + count

    def _fold(self) -> None:
        """Move the pending cells into the per-second store and the unflushed deltas."""
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        unflushed = self._unflushed
        for key, stats in pending.items():
            self._cell(key).merge(stats)
            delta = unflushed.get(key)
            if delta is None:
                unflushed[key] = stats
            else:
                delta.merge(stats)

    def take_unflushed(self) -> dict[RollupKey, SecondStats]:
        """What was merged since the last take (for the database), and forget it here."""
        self._fold()
        taken, self._unflushed = self._unflushed, {}
        return taken

    @property
    def unflushed(self) -> int:
        self._fold()
        return len(self._unflushed)

    def second(
        self, deployment: str, second: int, *, min_revision: int = 0
    ) -> dict[Variant, SecondStats]:
        """Both variants in one second, from revisions ``>= min_revision`` (0: any)."""
        self._fold()
        out: dict[Variant, SecondStats] = {}
        cells = self._seconds.get(deployment, {}).get(second)
        if not cells:
            return out
        for (revision, variant), stats in cells.items():
            if revision and revision < min_revision:
                continue
            total = out.get(variant)
            if total is None:
                out[variant] = total = SecondStats()
            total.merge(stats)
        return out

    def totals(
        self, deployment: str, *, since: int, until: int, min_revision: int = 0
    ) -> dict[Variant, WindowTotals]:
        """Each variant summed over the seconds ``since..until`` (inclusive)."""
        self._fold()
        sums: dict[Variant, SecondStats] = {}
        by_second = self._seconds.get(deployment, {})
        seconds: Iterable[int] = (
            range(since, until + 1)
            if until - since < len(by_second)
            else (s for s in by_second if since <= s <= until)
        )
        for s in seconds:
            for variant, stats in self.second(deployment, s, min_revision=min_revision).items():
                total = sums.get(variant)
                if total is None:
                    sums[variant] = total = SecondStats()
                total.merge(stats)
        return {variant: WindowTotals.of(stats) for variant, stats in sums.items()}

    def prune(self, before_second: int) -> None:
        """Drop seconds older than ``before_second`` (the unflushed deltas stay)."""
        self._fold()
        for deployment in list(self._seconds):
            by_second = self._seconds[deployment]
            for s in [s for s in by_second if s < before_second]:
                del by_second[s]
            if not by_second:
                del self._seconds[deployment]


class RollingWindow:
    """Both variants summed over the last ``seconds`` settled seconds, kept up to date by adding
    the newest second and taking out the one that leaves (the monitor's evaluation window:
    O(1) per second instead of a sum over the whole window at every tick)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._ring: deque[tuple[int, dict[Variant, SecondStats]]] = deque()
        self.sums: dict[Variant, SecondStats] = {
            Variant.STABLE: SecondStats(),
            Variant.CANARY: SecondStats(),
        }
        self._max: dict[Variant, deque[tuple[int, float]]] = {
            Variant.STABLE: deque(),
            Variant.CANARY: deque(),
        }

    def push(self, second: int, both: Mapping[Variant, SecondStats]) -> None:
        """Add ``second`` (seconds must come in increasing order)."""
        self._ring.append((second, dict(both)))
        for variant, stats in both.items():
            total = self.sums[variant]
            total.requests += stats.requests
            total.errors += stats.errors
            total.latency_sum_ms += stats.latency_sum_ms
            for bucket, count in stats.histogram.items():
                total.histogram[bucket] = total.histogram.get(bucket, 0) + count
            # the window's maximum: a monotonic queue of (second, max) pairs
            queue = self._max[variant]
            while queue and queue[-1][1] <= stats.latency_max_ms:
                queue.pop()
            queue.append((second, stats.latency_max_ms))
        while self._ring and self._ring[0][0] <= second - self.seconds:
            self._take_out(self._ring.popleft()[1])
        for variant, queue in self._max.items():
            while queue and queue[0][0] <= second - self.seconds:
                queue.popleft()
            self.sums[variant].latency_max_ms = queue[0][1] if queue else 0.0

    def _take_out(self, both: Mapping[Variant, SecondStats]) -> None:
        for variant, stats in both.items():
            total = self.sums[variant]
            total.requests -= stats.requests
            total.errors -= stats.errors
            total.latency_sum_ms -= stats.latency_sum_ms
            histogram = total.histogram
            for bucket, count in stats.histogram.items():
                left = histogram[bucket] - count
                if left:
                    histogram[bucket] = left
                else:
                    del histogram[bucket]

    def totals(self) -> dict[Variant, WindowTotals]:
        return {variant: WindowTotals.of(stats) for variant, stats in self.sums.items()}
