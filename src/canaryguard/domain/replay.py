"""Replaying a stream of outcomes through the monitor's judgement at simulated speed.

A stream is JSON lines, each either one request::

    {"t": 12.3, "variant": "canary", "ok": false, "latency_ms": 48.0}

or one variant's aggregate of one second::

    {"t": 12, "variant": "stable", "requests": 950, "errors": 9, "latency_ms": [41.0, 52.5]}

``t`` is seconds since the canary started; ``latency_ms`` of an aggregate lists latency samples
(any number, also none). Stable's lines may have a negative ``t``: its traffic before the canary
started, from which the detector learns how much stable's rates wobble (the last
``history_seconds`` of it are used, as the live monitor does, and with an unset
``dispersion_block_seconds`` the last hour of it chooses the block length). Lines may come in
any order. Each second is judged as the monitor judges a settled second, and a decision at
second ``s`` is reported at ``s + 1 + settle``: when the live monitor would have taken it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryguard.domain.assignment import Variant
from canaryguard.domain.checks import Extension
from canaryguard.domain.histogram import bucket_for
from canaryguard.domain.judge import Judge
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.windows import SecondStats

__all__ = ["ReplayResult", "parse_stream", "replay"]

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # simulated time: second t is EPOCH + t


@dataclass(frozen=True)
class ReplayResult:
    rolled_back: bool
    decision_t: float | None
    reason: str
    condition: str
    seconds: int

    def as_json(self) -> dict[str, Any]:
        return {
            "rolled_back": self.rolled_back,
            "decision_t": self.decision_t,
            "reason": self.reason,
            "condition": self.condition,
        }


def _number(line: Mapping[str, Any], key: str, where: str, *, negative: bool = False) -> float:
    value = line.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {key!r} must be a finite number, got {value!r}")
    if value < 0 and not negative:
        raise ValueError(f"{where}: {key!r} must be >= 0, got {value!r}")
    return float(value)


def parse_stream(
    lines: Iterable[Mapping[str, Any]],
) -> dict[int, dict[Variant, SecondStats]]:
    """Per second and variant, the outcomes of ``lines``; a bad line raises ``ValueError``
    naming its number and what is wrong."""
    seconds: dict[int, dict[Variant, SecondStats]] = {}
    for number, line in enumerate(lines, start=1):
        where = f"line {number}"
        if not isinstance(line, Mapping):
            raise ValueError(f"{where}: not a JSON object")  # noqa: TRY004 - bad input
        try:
            variant = Variant(str(line.get("variant")))
        except ValueError:
            raise ValueError(f"{where}: variant must be 'stable' or 'canary'") from None
        second = math.floor(_number(line, "t", where, negative=True))
        if second < 0 and variant is not Variant.STABLE:
            raise ValueError(
                f"{where}: t must be >= 0 for the canary (a negative t is stable's traffic "
                "before the canary started)"
            )
        stats = seconds.setdefault(second, {}).setdefault(variant, SecondStats())
        if "requests" in line:
            requests = int(_number(line, "requests", where))
            errors = int(_number(line, "errors", where))
            if errors > requests:
                raise ValueError(f"{where}: errors ({errors}) exceed requests ({requests})")
            samples = line.get("latency_ms", [])
            if not isinstance(samples, list):
                raise ValueError(f"{where}: latency_ms of an aggregate is a list of samples")
            latencies = [_number({"sample": s}, "sample", where) for s in samples]
            histogram: dict[int, int] = {}
            for latency in latencies:
                histogram[bucket_for(latency)] = histogram.get(bucket_for(latency), 0) + 1
            stats.add(requests, errors, sum(latencies), max(latencies, default=0.0), histogram)
        elif "ok" in line:
            if not isinstance(line["ok"], bool):
                raise ValueError(f"{where}: 'ok' must be true or false")
            latency = _number(line, "latency_ms", where)
            stats.add(1, 0 if line["ok"] else 1, latency, latency, {bucket_for(latency): 1})
        else:
            raise ValueError(f"{where}: neither a request ('ok') nor an aggregate ('requests')")
    return seconds


def replay(
    seconds: Mapping[int, Mapping[Variant, SecondStats]],
    config: RollbackConfig,
    *,
    settle_seconds: int = 2,
    extensions: Mapping[str, Extension] | None = None,
) -> ReplayResult:
    """Judge every second from 0 to the last one in order (missing seconds are empty). With
    ``auto_rollback_enabled`` off, a regression is reported but not as a rollback."""
    judge = Judge(config, started_at=0, extensions=extensions)
    before = range(-judge.history_span, 0)
    judge.prime([seconds.get(second, {}).get(Variant.STABLE) for second in before])
    last = max(seconds, default=-1)
    for second in range(last + 1):
        judge.push(second, seconds.get(second, {}))
        _, found = judge.judge(EPOCH + timedelta(seconds=second + 1))
        if found is not None:
            condition, reason = found
            if not config.auto_rollback_enabled:
                reason = f"regression found, but auto_rollback_enabled is off: {reason}"
            return ReplayResult(
                rolled_back=config.auto_rollback_enabled,
                decision_t=float(second + 1 + settle_seconds),
                reason=reason,
                condition=condition,
                seconds=second + 1,
            )
    return ReplayResult(
        rolled_back=False,
        decision_t=None,
        reason="no regression found",
        condition="",
        seconds=max(last + 1, 0),
    )
