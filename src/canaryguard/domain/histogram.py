"""Mergeable log-bucket latency histograms. Standard library only: the client SDK shares it.

Bucket ``i`` holds latencies in ``[GROWTH**i, GROWTH**(i+1))`` milliseconds, so any quantile read
from the buckets is at most 10 % above the true value for latencies of 1 ms and more (those
under 1 ms share bucket 0, read as 1.1 ms). Histograms are sparse ``{bucket: count}`` maps and
merge by adding counts, which lets clients
pre-aggregate per second and the server add their batches up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["GROWTH", "MAX_BUCKET", "bucket_for", "bucket_upper_ms", "merge", "quantile"]

GROWTH = 1.1
MAX_BUCKET = 200  # 1.1**200 ms is about 6 days: anything slower is counted there
_LOG_GROWTH = math.log(GROWTH)


def bucket_for(latency_ms: float) -> int:
    """The bucket of one latency (negative or non-finite values are the caller's error)."""
    if latency_ms < 1.0:
        return 0
    return min(int(math.log(latency_ms) / _LOG_GROWTH), MAX_BUCKET)


def bucket_upper_ms(bucket: int) -> float:
    """The upper edge of ``bucket`` in milliseconds."""
    return float(GROWTH ** (bucket + 1))


def merge(into: dict[int, int], other: Mapping[int, int]) -> dict[int, int]:
    """Add ``other``'s counts into ``into`` (and return it)."""
    for bucket, count in other.items():
        into[bucket] = into.get(bucket, 0) + count
    return into


def quantile(histogram: Mapping[int, int], q: float) -> float:
    """The ``q`` quantile (0..1) in milliseconds, as the upper edge of its bucket; 0 when empty."""
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_upper_ms(bucket)
    return bucket_upper_ms(max(histogram))
