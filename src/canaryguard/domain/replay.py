"""Replaying a stream of outcomes through the monitor's judgement at simulated speed.

A stream is JSON lines, each either one request::

    {"t": 12.3, "variant": "canary", "ok": false, "latency_ms": 48.0}

or one variant's aggregate of one second::

    {"t": 12, "variant": "stable", "requests": 950, "errors": 9, "latency_ms": [41.0, 52.5],
     "latency_sum_ms": 43700.0, "latency_max_ms": 88.0}

``t`` is seconds since the canary started, from ``-MAX_T`` to ``MAX_T``. An aggregate's
``latency_ms`` is a sample of its requests' latencies (any number of them, also none): their
bucket shares stand for all its requests, as the histogram a client reports would, and their
mean for the requests' mean unless ``latency_sum_ms`` (optional, like ``latency_max_ms``) gives
the sum as measured. Stable's lines may have a negative ``t``: its traffic before the canary
started, from which the detector learns how much stable's rates wobble (the last
``history_seconds`` of it are used, as the live monitor does, and with an unset
``dispersion_block_seconds`` the last hour of it chooses the block length). Lines may come in
any order. Each second is judged as the monitor judges a settled second, and a decision at
second ``s`` is reported at ``s + 1 + settle``: when the live monitor would have taken it.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from canaryguard.domain.assignment import Variant
from canaryguard.domain.checks import Extension
from canaryguard.domain.histogram import GROWTH, bucket_for
from canaryguard.domain.judge import Judge
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.observation_batch import MAX_LATENCY
from canaryguard.domain.windows import SecondStats

__all__ = [
    "MAX_COUNT",
    "MAX_SAMPLES",
    "MAX_T",
    "ReplayResult",
    "aggregate_line",
    "apportion",
    "has_canary_traffic",
    "histogram_samples",
    "parse_stream",
    "read_stream",
    "replay",
]

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # simulated time: second t is EPOCH + t
# replay judges every second from 0 to the last one (about 15 s of CPU for a week of them):
# a week bounds that, and a t beyond it is far more likely a mistake (milliseconds, Unix time)
MAX_T = 7 * 24 * 3600
# requests and errors of one line, as the JSON observation model bounds one reported second
# (``Observation`` in domain/models.py); latencies as both observation formats bound them
MAX_COUNT = 10**12
# latency samples ``record`` writes per line at most: the shares of the buckets are what the
# samples carry (the mean comes from latency_sum_ms), and a thousand keep them to 0.1 %
MAX_SAMPLES = 1_000
_SHOWN = 40  # characters of a bad value an error message quotes


@dataclass(frozen=True)
class ReplayResult:
    """What the monitor would have done on a stream.

    ``regression_t``: when it would have found a regression (seconds since the canary started,
    at the settled second's end), rolled back or not; ``decision_t``: the same, but only when it
    rolls back (``auto_rollback_enabled``), else ``None``. ``seconds``: how many seconds of the
    canary's run were judged (up to the rollback; all of them when there is none)."""

    rolled_back: bool
    decision_t: float | None
    reason: str
    condition: str
    seconds: int
    regression_t: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The result as ``replay --json`` prints it."""
        return {
            "rolled_back": self.rolled_back,
            "decision_t": self.decision_t,
            "regression_t": self.regression_t,
            "reason": self.reason,
            "condition": self.condition,
            "seconds": self.seconds,
        }


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        return "a number of more than 4,300 digits"
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


def _number(value: object, field: str, where: str, *, low: float, high: float) -> float:
    """``value`` as a float in ``low..high``; else a ``ValueError`` naming ``field``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ValueError(f"{where}: {field!r} must be a finite number, got {_shown(value)}")
    # compared before float(): an integer literal of hundreds of digits overflows a float
    if not low <= value <= high:
        raise ValueError(
            f"{where}: {field!r} must be from {low:g} to {high:g}, got {_shown(value)}"
        )
    return float(value)


def _count(value: object, field: str, where: str) -> int:
    """``value`` as a whole number in ``0..MAX_COUNT``; else a ``ValueError`` naming ``field``."""
    number = _number(value, field, where, low=0, high=MAX_COUNT)
    if not number.is_integer():
        raise ValueError(f"{where}: {field!r} must be a whole number, got {_shown(value)}")
    return int(number)


def apportion(histogram: Mapping[int, int], total: int) -> dict[int, int]:
    """``total`` counts shared among ``histogram``'s buckets in proportion to their counts
    (largest remainders: the shares add up to ``total`` exactly); empty buckets are left out."""
    weight = sum(histogram.values())
    if weight <= 0 or total <= 0:
        return {}
    shares = {bucket: count * total // weight for bucket, count in histogram.items()}
    # the counts left over go to the largest remainders (ties: the lower bucket, for a
    # deterministic result)
    left = total - sum(shares.values())
    ranked = sorted(histogram, key=lambda b: (-(histogram[b] * total % weight), b))
    for bucket in ranked[:left]:
        shares[bucket] += 1
    return {bucket: count for bucket, count in sorted(shares.items()) if count}


def histogram_samples(histogram: Mapping[int, int], limit: int = MAX_SAMPLES) -> list[float]:
    """A histogram as latency samples at each bucket's geometric middle: at most ``limit`` of
    them, in the buckets' proportions (a bucket with less than ``1 / limit`` of the counts may
    get none)."""
    samples: list[float] = []
    for bucket, count in apportion(histogram, min(sum(histogram.values()), limit)).items():
        middle = 0.5 if bucket == 0 else GROWTH ** (bucket + 0.5)
        samples += [round(middle, 3)] * count
    return samples


def aggregate_line(t: int, variant: Variant, stats: SecondStats) -> dict[str, Any]:
    """One variant's second as an aggregate line (what ``canaryguard record`` writes): its
    counts and latency sum and maximum as they are, its histogram as at most ``MAX_SAMPLES``
    samples in the buckets' proportions."""
    return {
        "t": t,
        "variant": variant.value,
        "requests": stats.requests,
        "errors": stats.errors,
        "latency_sum_ms": stats.latency_sum_ms,
        "latency_max_ms": stats.latency_max_ms,
        "latency_ms": histogram_samples(stats.histogram),
    }


def _aggregate(line: Mapping[str, Any], where: str) -> SecondStats:
    requests = _count(line.get("requests"), "requests", where)
    errors = _count(line.get("errors"), "errors", where)
    if errors > requests:
        raise ValueError(f"{where}: errors ({errors}) exceed requests ({requests})")
    samples = line.get("latency_ms", [])
    if not isinstance(samples, list):
        message = f"{where}: 'latency_ms' of an aggregate is a list of samples"
        raise ValueError(message)  # noqa: TRY004 - bad input
    latencies = [
        _number(s, f"latency_ms[{i}]", where, low=0, high=MAX_LATENCY)
        for i, s in enumerate(samples)
    ]
    if "latency_sum_ms" in line:
        total = _number(line["latency_sum_ms"], "latency_sum_ms", where, low=0, high=MAX_LATENCY)
    else:
        # the samples stand for all the requests: their mean is the requests' mean
        total = math.fsum(latencies) / len(latencies) * requests if latencies else 0.0
    if "latency_max_ms" in line:
        most = _number(line["latency_max_ms"], "latency_max_ms", where, low=0, high=MAX_LATENCY)
    else:
        most = max(latencies, default=0.0)
    measured: dict[int, int] = {}
    for latency in latencies:
        bucket = bucket_for(latency)
        measured[bucket] = measured.get(bucket, 0) + 1
    # as a client's histogram counts every request of its second (the detector's latency tests
    # weigh the counts as evidence), the samples' shares are spread over all the requests
    return SecondStats(requests, errors, total, most, apportion(measured, requests))


def _request(line: Mapping[str, Any], where: str) -> SecondStats:
    if not isinstance(line["ok"], bool):
        raise ValueError(f"{where}: 'ok' must be true or false")  # noqa: TRY004 - bad input
    latency = _number(line.get("latency_ms"), "latency_ms", where, low=0, high=MAX_LATENCY)
    return SecondStats(1, 0 if line["ok"] else 1, latency, latency, {bucket_for(latency): 1})


def _parse(lines: Iterable[tuple[int, object]]) -> dict[int, dict[Variant, SecondStats]]:
    seconds: dict[int, dict[Variant, SecondStats]] = {}
    for number, line in lines:
        where = f"line {number}"
        if not isinstance(line, Mapping):
            raise ValueError(f"{where}: not a JSON object")  # noqa: TRY004 - bad input
        try:
            variant = Variant(str(line.get("variant")))
        except ValueError:
            raise ValueError(f"{where}: variant must be 'stable' or 'canary'") from None
        second = math.floor(_number(line.get("t"), "t", where, low=-MAX_T, high=MAX_T))
        if second < 0 and variant is not Variant.STABLE:
            raise ValueError(
                f"{where}: t must be >= 0 for the canary (a negative t is stable's traffic "
                "before the canary started)"
            )
        if "requests" in line:
            stats = _aggregate(line, where)
        elif "ok" in line:
            stats = _request(line, where)
        else:
            raise ValueError(f"{where}: neither a request ('ok') nor an aggregate ('requests')")
        seconds.setdefault(second, {}).setdefault(variant, SecondStats()).merge(stats)
    return seconds


def parse_stream(
    lines: Iterable[Mapping[str, Any]],
) -> dict[int, dict[Variant, SecondStats]]:
    """Per second and variant, the outcomes of ``lines`` (decoded JSON objects, numbered from 1);
    a bad line raises ``ValueError`` naming its number and what is wrong."""
    return _parse(enumerate(lines, start=1))


def _json_lines(data: bytes) -> Iterator[tuple[int, object]]:
    """Each non-blank line of ``data`` decoded, with its number in the file."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]  # some editors on Windows start a file with it
    # split on newlines only: str.splitlines() would also split a JSON string holding U+2028
    # or another Unicode line break, which JSON allows raw
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"line {number} is not UTF-8 (byte {exc.start + 1})") from None
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)  # a trailing "\r" is JSON whitespace
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError:
            # the one other ValueError of json.loads: an integer literal longer than Python
            # converts (4,300 digits)
            raise ValueError(f"line {number}: a number has too many digits") from None
        except RecursionError:
            raise ValueError(f"line {number}: arrays or objects nested too deeply") from None


def read_stream(data: bytes) -> dict[int, dict[Variant, SecondStats]]:
    """Per second and variant, the outcomes of a stream file's bytes (JSON lines, UTF-8; blank
    lines are skipped); a bad line raises ``ValueError`` naming its line in the file."""
    return _parse(_json_lines(data))


def has_canary_traffic(seconds: Mapping[int, Mapping[Variant, SecondStats]]) -> bool:
    """Whether any second holds a canary request: without one there is nothing to judge."""
    return any(stats.requests for both in seconds.values() if (stats := both.get(Variant.CANARY)))


def replay(
    seconds: Mapping[int, Mapping[Variant, SecondStats]],
    config: RollbackConfig,
    *,
    settle_seconds: int = 2,
    extensions: Mapping[str, Extension] | None = None,
) -> ReplayResult:
    """Judge every second from 0 to the last one in order (missing seconds are empty). With
    ``auto_rollback_enabled`` off, the first regression is reported but not as a rollback,
    over all the seconds (the canary would have gone on)."""
    judge = Judge(config, started_at=0, extensions=extensions)
    before = range(-judge.history_span, 0)
    judge.prime([seconds.get(second, {}).get(Variant.STABLE) for second in before])
    last = max(seconds, default=-1)
    for second in range(last + 1):
        judge.push(second, seconds.get(second, {}))
        _, found = judge.judge(EPOCH + timedelta(seconds=second + 1))
        if found is not None:
            condition, reason = found
            at = float(second + 1 + settle_seconds)
            if not config.auto_rollback_enabled:
                return ReplayResult(
                    rolled_back=False,
                    decision_t=None,
                    reason=f"regression found at t={at:g} s ({condition}), but "
                    f"auto_rollback_enabled is off: {reason}",
                    condition=condition,
                    seconds=last + 1,
                    regression_t=at,
                )
            return ReplayResult(
                rolled_back=True,
                decision_t=at,
                reason=reason,
                condition=condition,
                seconds=second + 1,
                regression_t=at,
            )
    return ReplayResult(
        rolled_back=False,
        decision_t=None,
        reason="no regression found",
        condition="",
        seconds=max(last + 1, 0),
    )
