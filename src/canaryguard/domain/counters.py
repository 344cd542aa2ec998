"""Counters read from a metrics system (Prometheus) turned into per-second outcomes.

A counter series is a list of raw samples: (Unix time, cumulative value). What happened between
two samples of a series is their difference, or the later value when the counter went down (its
process restarted and counts from zero again: the rule of Prometheus' own ``increase()``). The
difference is counted in the second of the later sample. That is when it is known, and every
series of one target is scraped at the same instant, so a target's requests, errors and latency
buckets land in the same second and the canary and stable shares of one scrape are compared
with each other, as the detector's tests need (``docs/detection.md``).

Pure: no I/O, no clock reads. The Prometheus adapter fetches the samples; this decides what
they mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from canaryguard.domain.assignment import Variant
from canaryguard.domain.histogram import MAX_BUCKET, bucket_for, bucket_upper_ms
from canaryguard.domain.windows import SecondStats

__all__ = [
    "MAX_GAP_SECONDS",
    "CounterTracker",
    "Increment",
    "Sample",
    "SeriesKey",
    "bucket_at_or_above",
    "latency_histogram",
    "second_stats",
    "seconds_of",
]

Sample = tuple[float, float]  # (Unix time in seconds, the counter's value)
SeriesKey = tuple[tuple[str, str], ...]  # a series' labels, sorted
# Two samples of a series further apart than this start afresh: the counts between them cannot
# be placed in a second (Prometheus marks a series stale after 5 minutes without a sample too).
MAX_GAP_SECONDS = 300.0


Increment = tuple[int, float, float]  # (second, increase, time of the sample before it)


@dataclass
class CounterTracker:
    """The last sample seen of each series, so that each read counts only what is new.

    A series' first sample only sets where counting starts, as in Prometheus' ``increase()``:
    what it counted before is not known to have happened in the window read (a process that
    has run for days, a target just added to scraping). So is every sample up to ``after``: a
    tracker made when a deployment's selectors changed counts nothing that earlier reads of it
    counted already.
    """

    after: float | None = None
    last: dict[SeriesKey, Sample] = field(default_factory=dict)

    def increments(
        self, key: SeriesKey, samples: Sequence[Sample], *, until: float
    ) -> list[Increment]:
        """``(second, increase, since)`` for each of ``samples`` newer than the last one seen
        of ``key`` and not after ``until`` (later ones are left for the next read, when every
        series of their scrape is in); samples must be in time order, as Prometheus returns
        them."""
        out: list[Increment] = []
        previous = self.last.get(key)
        for time, value in samples:
            if time > until:
                break
            if not math.isfinite(value) or value < 0:
                continue  # not a counter's value: skipped, the next sample counts from the last
            if previous is not None and time <= previous[0]:
                continue  # seen in an earlier read
            if (
                previous is not None
                and (self.after is None or time > self.after)
                and time - previous[0] <= MAX_GAP_SECONDS
            ):
                increase = value - previous[1] if value >= previous[1] else value
                if increase > 0:
                    out.append((math.floor(time), increase, previous[0]))
            previous = (time, value)
        if previous is not None:
            self.last[key] = previous
        return out

    def prune(self, *, before: float) -> None:
        """Forget series whose last sample is older than ``before`` (gone: a process that
        stopped, a label value no longer used)."""
        for key in [k for k, (time, _) in self.last.items() if time < before]:
            del self.last[key]


def seconds_of(
    increments: Iterable[tuple[Variant, int, float]],
) -> dict[tuple[Variant, int], float]:
    """Increments added up per variant and second."""
    out: dict[tuple[Variant, int], float] = {}
    for variant, second, amount in increments:
        out[(variant, second)] = out.get((variant, second), 0.0) + amount
    return out


def bucket_at_or_above(upper_ms: float) -> int:
    """The lowest log bucket (``domain.histogram``) whose upper edge is at or above
    ``upper_ms``: a Prometheus bucket ``(.., le]`` is read there, so a quantile read from it is
    its ``le`` or at most 10 % above, as a client's own histogram is read."""
    bucket = bucket_for(upper_ms)  # the bucket holding it, whose upper edge is above it
    if bucket < MAX_BUCKET and bucket_upper_ms(bucket) < upper_ms:
        bucket += 1  # rounding in the logarithm
    if bucket > 0 and bucket_upper_ms(bucket - 1) >= upper_ms:
        bucket -= 1  # an edge itself (or rounding the other way)
    return bucket


def latency_histogram(
    cumulative: Mapping[float, float], *, largest: float | None = None
) -> dict[int, int]:
    """A log-bucket histogram from one second's increases of one Prometheus histogram's
    cumulative buckets (``le`` in milliseconds, ``math.inf`` for ``+Inf``).

    Each Prometheus bucket's count goes to the log bucket at or above its ``le``; the ``+Inf``
    bucket's to the log bucket above the largest finite ``le`` (slower than every edge, by how
    much is not known; with no finite edge at all, nowhere). ``largest`` is the histogram's
    largest finite edge: in a second in which every request was slower than all edges only
    ``+Inf`` increased, and without it those requests would have no edge to be slower than. A
    cumulative count lower than the one before it (series scraped at different instants)
    counts as no requests there.
    """
    out: dict[int, int] = {}
    below = 0.0
    finite = [le for le in cumulative if math.isfinite(le)]
    if largest is not None and math.isfinite(largest):
        finite.append(largest)
    top = min(bucket_at_or_above(max(finite)) + 1, MAX_BUCKET) if finite else None
    for le in sorted(cumulative):
        count = cumulative[le] - below
        below = max(below, cumulative[le])
        whole = round(count)
        if whole <= 0:
            continue
        bucket = bucket_at_or_above(le) if math.isfinite(le) else top
        if bucket is None:
            continue  # a histogram with no finite edge says nothing of how slow
        out[bucket] = out.get(bucket, 0) + whole
    return out


def second_stats(
    requests: float,
    errors: float,
    latency_sum_ms: float,
    histogram: Mapping[int, int],
) -> SecondStats:
    """One variant's second from its counters' increases. Errors are not capped at requests:
    counted by another target or scrape than the requests, they may arrive a read earlier or
    later, and a cap would lose them for good (rates read from them are capped at 1)."""
    return SecondStats(
        requests=round(requests),
        errors=round(errors),
        latency_sum_ms=max(latency_sum_ms, 0.0),
        latency_max_ms=bucket_upper_ms(max(histogram)) if histogram else 0.0,
        histogram=dict(histogram),
    )
