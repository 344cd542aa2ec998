"""Outcomes pre-aggregated per deployment, revision, variant and second, in bounded memory."""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canaryguard.domain.assignment import Variant
from canaryguard.domain.histogram import bucket_for
from canaryguard.domain.observation_batch import MAX_LATENCY

__all__ = ["OutcomeBuffer"]

Key = tuple[str, int, Variant, int]


def _sanitised(latency_ms: object) -> float:
    """A latency the server accepts, whatever the application passed: a negative number (or
    -inf) is 0, anything above the server's bound (or +inf) is the bound, and NaN or anything
    that is not a real number is 0. ``record`` is on the request path: it must never raise."""
    # int and float first: the abstract Real check is slower, and nearly every call is one
    if not isinstance(latency_ms, int | float) and not isinstance(latency_ms, numbers.Real):
        return 0.0
    try:
        value = float(latency_ms)
    except OverflowError:  # an int beyond float's range (only ints overflow float())
        value = math.inf if isinstance(latency_ms, int) and latency_ms > 0 else 0.0
    if not value >= 0:  # NaN and negatives
        return 0.0
    return min(value, MAX_LATENCY)


@dataclass(slots=True)
class _Cell:
    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)


class OutcomeBuffer:
    """Thread-safe; at most ``max_cells`` open cells, outcomes beyond that are dropped and
    counted (a client must never grow without bound while the server is away)."""

    def __init__(self, *, max_cells: int = 20_000, now: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._cells: dict[Key, _Cell] = {}
        self._max_cells = max_cells
        self._now = now
        self.dropped = 0

    def add(
        self, deployment: str, revision: int, variant: Variant, *, ok: bool, latency_ms: float
    ) -> None:
        key = (deployment, revision, variant, int(self._now()))
        latency = _sanitised(latency_ms)
        bucket = bucket_for(latency)
        with self._lock:
            cell = self._cells.get(key)
            if cell is None:
                if len(self._cells) >= self._max_cells:
                    self.dropped += 1
                    return
                cell = self._cells[key] = _Cell()
            cell.requests += 1
            if not ok:
                cell.errors += 1
            # saturates at the server's bound: a batch holding a larger sum is refused whole
            cell.latency_sum_ms = min(cell.latency_sum_ms + latency, MAX_LATENCY)
            cell.latency_max_ms = max(cell.latency_max_ms, latency)
            cell.histogram[bucket] = cell.histogram.get(bucket, 0) + 1

    def drain(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Take the finished seconds (all of them with ``everything``) as observation dicts.

        Every second but the current one is finished, those after it included: after the wall
        clock steps back, the seconds recorded before the step are not held until it catches
        up. (Should the clock come back to such a second, its new cell is sent on its own: the
        server adds cells up.)"""
        current = int(self._now())
        with self._lock:
            keys = [k for k in self._cells if everything or k[3] != current]
            cells = [(k, self._cells.pop(k)) for k in keys]
        return [
            {
                "deployment": deployment,
                "revision": revision,
                "variant": variant.value,
                "second": second,
                "requests": cell.requests,
                "errors": cell.errors,
                "latency_sum_ms": cell.latency_sum_ms,
                "latency_max_ms": cell.latency_max_ms,
                "histogram": {str(b): c for b, c in cell.histogram.items()},
            }
            for (deployment, revision, variant, second), cell in cells
        ]

    def reset(self) -> None:
        """Forget everything (in a forked child, the parent's outcomes are the parent's)."""
        self._lock = threading.Lock()
        self._cells = {}
        self.dropped = 0
