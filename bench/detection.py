"""Benchmark: canaryguard's detector against canary-analysis baselines on simulated traffic.

How fast each catches a bad canary, and how often each rolls back a good one, on the same
seeded streams.

Run from the repository root::

    .venv/bin/python bench/detection.py                  # every scenario, full size
    .venv/bin/python bench/detection.py --quick          # 100 / 200 / 500 runs
    .venv/bin/python bench/detection.py --scenarios base null --runs 200 --null-runs 500 \\
        --json /tmp/detection.json

Defaults: ``--runs 500`` per regression scenario (10 minutes each), ``--null-runs 2000`` per
no-regression scenario (30 minutes each), ``--calibration-runs 2000``, ``--workers 2``,
``--seed 1``, ``--history 600``, ``--canaries 1000 --cpu-ticks 60``: about 30 minutes on 2
busy cores (``--quick``: about 3). Most of the time is the null runs: 1,800 seconds of
canaryguard each, twice (with and without history).

**Ground truth.** Each run is one canary, simulated second by second with its own seeded numpy
``Generator`` (seeded from ``--seed``, the scenario's name and the run's number, so every
detector sees exactly the same streams, and a scenario's runs do not change when others are
added). Per second: Poisson traffic (1,000 req/s), split by a binomial draw into canary (10 %)
and stable; binomial error counts (1 % per request); and each side's latency histogram in
canaryguard's log buckets (``domain.histogram``), drawn with one ``multinomial`` over the
bucket probabilities of a lognormal latency (median 100 ms, sigma 0.5), not request by request.
A regression starts at the canary's start: errors times a ratio, latency times a ratio (every
request 10 % slower), or a tail (1 % of canary requests 500 ms slower: a mixture whose bucket
probabilities come from the shifted lognormal's CDF). Nuisances: a diurnal ramp (traffic from
x0.5 to x1.5 over the run); an incident on both sides (errors x5 for the 2 middle minutes); a
canary warm-up (its first 60 s with errors x3 and latency x1.5); over-dispersion (each side's
error rate times its own Gamma factor, mean 1, CV 0.3, fixed per 10-second block, the blocks at
a random phase to the canary's start; latency untouched); a latency wobble (each side's latency
scale times its own Gamma factor, mean 1, CV 0.1, fixed per 10-second block at a random phase;
error rates untouched); telemetry lag (2 to 5 s per run:
every detector sees every second that much later); data gaps (stretches of 5 to 30 s without
data from either side, one per 3 minutes on average); slow swings (the over-dispersion's
factors last 60 s instead of 10 s: ``null-slow-dispersion``, and errors x2 on such a fleet,
``base-slow-dispersion``).

**Stable's history.** Before each run's canary starts, stable serves all the traffic: ``--history``
seconds (600) simulated with their own generator (seeded like the run, key ``NAME/history``), all
1,000 req/s on stable, with the run's over-dispersion, latency wobble and gaps (the fleet's
character; no incident, ramp or lag). canaryguard gets them as ``Detector.prime``, as the monitor
gives it stable's last ``history_seconds``; it also runs without them (``canaryguard, no
history``), on the same streams. With ``dispersion_block_seconds`` unset (the default), the
block length is chosen from stable's last hour (``history_span``): the history preceded by
50 minutes more of the same fleet, errors only, from a generator of its own (key
``NAME/swings``), so the runs' streams and histories are those of a fixed block. The baselines
do not use history.

**Detectors**, all fed the same streams:

- canaryguard: ``Detector(DetectorConfig())`` (``warmup_seconds=60`` in the warm-up scenario),
  fed one second at a time; a verdict on second ``s`` (``[s, s + 1)``) is acted on at ``s + 1 +
  lag``, when the second ends, as each baseline acts at its check with the data complete by then
  (neither is charged the live delay before data count: the monitor's ``settle_seconds``, a
  Prometheus scrape interval).
- oracle SPRT, the floor: Wald's SPRT with the true rates (alpha 0.01, upper boundary only) on
  the canary's errors, or, for the latency regressions, on the canary requests at or above the
  bucket edge nearest stable's true p50 (latency +10 %) or p99 (tail), with their true
  probabilities. In no-regression scenarios it tests the base case (errors 1 % against 2 %).
- fixed thresholds (the original system): canary error rate > 5 % or mean latency > 1,000 ms
  over the last 5 minutes, checked every 30 s.
- Flagger: every 60 s over the last 60 s, request-success-rate >= 99 % and request-duration p99
  <= 500 ms (``histogram_quantile`` over the canary's buckets); failed checks are counted and the
  canary is rolled back when they reach ``threshold`` (1, and the documented 10). A check with no
  canary data fails, as in Flagger.
- Argo Rollouts: a success-rate metric over the interval with ``successCondition: result >=
  0.95``: interval 1 min with ``failureLimit: 0``, and the documented interval 5 min with
  ``failureLimit: 3`` (aborts when more than 3 measurements failed). First measurement one
  interval in; ``initialDelay: 60s`` in the warm-up scenario.
- Kayenta-like: at the end of each interval (5 min, and 30 min), one-sided Mann-Whitney U tests
  (``scipy.stats.mannwhitneyu``) of the canary's against stable's per-10-second error rates and
  mean latencies, with all data since the analysis began; a metric fails at p < 0.05, one failed
  metric of two scores 50, under the pass mark of 95, so the canary fails.
  ``beginCanaryAnalysisAfterMins: 1`` in the warm-up scenario. (The fixed thresholds and Flagger
  have no such setting.)
- each baseline ``tuned``: its main line (the fixed error rate; Flagger's success rate; Argo's
  success condition; Kayenta's p-value), with the rest unchanged, set on ``--calibration-runs``
  separate runs of the null scenario (their own seeds) so that 1 % of them roll back, then used
  on every scenario.
- each baseline ``matched`` (when the null scenario runs): the same, with the line set so that
  the calibration runs roll back at canaryguard's own rate in the null scenario (at most that
  share: ``floor(rate x runs)`` of them); the goal "faster than every baseline tuned to the same
  false-rollback rate" is judged against these. A regression on noisier traffic (over-dispersed,
  latency wobble) is judged against lines matched on that traffic: set on the runs of the
  no-regression scenario with the same nuisance, at canaryguard's rate there. The table also
  shows what the lines matched on steady traffic do there: how fast, and how many good
  canaries they roll back.
- each baseline with ``one line`` (when the goals' three no-regression scenarios run: steady,
  incident on both sides, over-dispersed): the line a user would deploy, one for whatever traffic
  comes, as canaryguard runs with one configuration. Per baseline, the line is matched to
  canaryguard's rate on each of the three (steady: the calibration runs) and the strictest of
  the three is kept, so that it rolls back no more good canaries than canaryguard on any of
  them. The goals are judged against these too, beside the per-traffic match above, which lets
  a baseline know which traffic it will see.

Baselines only look at the end of their intervals, so each run keeps its checks' statistics and
the decisions for any line are taken afterwards, vectorised. A detection counts when the rollback
decision falls within the run (10 min for regressions, 30 min without); times to detect are from
the regression's onset, and medians and p95s are nearest-rank over *all* runs, undetected ones
counting as never (shown as ``> 600``). False rollbacks come with the upper end of the exact
(Clopper-Pearson) 95 % interval.

Also measured: the CPU time (``time.process_time``) of one tick of 1,000 canaries, i.e.
``Detector.update`` on 1,000 detectors, each fed its own simulated null canary (counts and
histograms built beforehand), over ``--cpu-ticks`` seconds after 30 unmeasured ones.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats  # type: ignore[import-untyped, unused-ignore]

from canaryguard.domain.detector import (
    SLOW_BLOCK_SECONDS,
    Counts,
    Detector,
    DetectorConfig,
    VerdictKind,
)
from canaryguard.domain.histogram import GROWTH, MAX_BUCKET
from canaryguard.domain.judge import history_span
from canaryguard.domain.models import RollbackConfig

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.options import add_simulation_options, positive, write_report
from bench.tables import markdown_table

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# -- the simulated service -------------------------------------------------------------------

RATE = 1000.0  # requests per second, both sides together
CANARY_SHARE = 0.10
ERROR_RATE = 0.01
MEDIAN_MS = 100.0
SIGMA = 0.5
TAIL_MS = 500.0
REGRESSION_SECONDS = 600
NULL_SECONDS = 1800
RAMP = (0.5, 1.5)
INCIDENT_SECONDS = 120
INCIDENT_ERRORS = 5.0
WARMUP_SECONDS = 60
WARMUP_ERRORS = 3.0
WARMUP_LATENCY = 1.5
BLOCK_SECONDS = 10  # over-dispersion factors and Kayenta's data points
LAG_SECONDS = (2, 5)
GAP_SECONDS = (5, 30)
GAP_EVERY_SECONDS = 180.0
ALPHA = 0.01
MIN_BLOCKS = 3  # Kayenta compares nothing with fewer data points a side
CALIBRATION = "calibration"
TUNED_RATE = 0.01
# canaryguard as a deployment gets it by default: stable's traffic before the canary, and the
# detector's dispersion blocks (not the simulated wobble's BLOCK_SECONDS, which is the fleet's)
HISTORY_SECONDS = RollbackConfig().history_seconds
DETECTOR_BLOCK_SECONDS = RollbackConfig().dispersion_block_seconds  # None: chosen per run

# bucket i of domain.histogram holds [EDGES[i], EDGES[i + 1]) ms; bucket 0 also holds [0, 1)
EDGES: Floats = np.concatenate(([0.0], GROWTH ** np.arange(1, MAX_BUCKET + 1.0), [np.inf]))
# a latency per bucket for means (fixed thresholds, Kayenta): its geometric middle
MIDDLES: Floats = np.concatenate(([0.55], np.sqrt(EDGES[1:-2] * EDGES[2:-1]), [EDGES[-2]])).astype(
    np.float64
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    seconds: int
    error_ratio: float = 1.0
    latency_ratio: float = 1.0
    tail_share: float = 0.0
    onset: int = 0
    error_dispersion_cv: float = 0.0  # each side's error rate x Gamma(mean 1, this CV) per block
    latency_wobble_cv: float = 0.0  # each side's latency scale x Gamma(mean 1, this CV) per block
    wobble_seconds: int = BLOCK_SECONDS  # how long each of those factors lasts
    ramp: bool = False
    incident: bool = False
    warmup: bool = False
    lag: bool = False
    gaps: bool = False
    # the no-regression scenario with the same traffic: the baselines matched to canaryguard's
    # false-rollback rate for this scenario are calibrated on it (when it runs)
    traffic: str = "null"

    @property
    def regression(self) -> bool:
        return self.error_ratio != 1.0 or self.latency_ratio != 1.0 or self.tail_share > 0

    @property
    def grace(self) -> int:
        return WARMUP_SECONDS if self.warmup else 0


REGRESSIONS = (
    Scenario("base", "errors x2", REGRESSION_SECONDS, error_ratio=2.0),
    Scenario("errors-1.5", "errors x1.5", REGRESSION_SECONDS, error_ratio=1.5),
    Scenario("latency-10", "latency +10 %", REGRESSION_SECONDS, latency_ratio=1.1),
    Scenario("tail", "tail: 1 % +500 ms", REGRESSION_SECONDS, tail_share=0.01),
    Scenario(
        "base-dispersion",
        "errors x2, over-dispersed",
        REGRESSION_SECONDS,
        error_ratio=2.0,
        error_dispersion_cv=0.3,
        traffic="null-dispersion",
    ),
    Scenario(
        "base-slow-dispersion",
        "errors x2, 1 min swings",
        REGRESSION_SECONDS,
        error_ratio=2.0,
        error_dispersion_cv=0.3,
        wobble_seconds=60,
        traffic="null-slow-dispersion",
    ),
    Scenario(
        "base-wobble",
        "errors x2, latency wobble",
        REGRESSION_SECONDS,
        error_ratio=2.0,
        latency_wobble_cv=0.1,
        traffic="null-wobble",
    ),
    Scenario(
        "base-lag-gaps",
        "errors x2, lag + gaps",
        REGRESSION_SECONDS,
        error_ratio=2.0,
        lag=True,
        gaps=True,
    ),
)
NULLS = (
    Scenario("null", "no regression", NULL_SECONDS),
    Scenario("null-incident", "incident on both sides", NULL_SECONDS, incident=True),
    Scenario("null-dispersion", "over-dispersed", NULL_SECONDS, error_dispersion_cv=0.3),
    Scenario("null-wobble", "latency wobble", NULL_SECONDS, latency_wobble_cv=0.1),
    Scenario(
        "null-slow-dispersion",
        "over-dispersed, 1 min swings",
        NULL_SECONDS,
        error_dispersion_cv=0.3,
        wobble_seconds=60,
    ),
    Scenario("null-ramp", "diurnal ramp", NULL_SECONDS, ramp=True),
    Scenario("null-warmup", "canary warm-up", NULL_SECONDS, warmup=True),
)
SCENARIOS = {scenario.name: scenario for scenario in (*REGRESSIONS, *NULLS)}
# outside the goals, run on request: a stress case the detector does not handle yet
DEFAULT_SCENARIOS = list(SCENARIOS)


@dataclass(frozen=True, slots=True)
class Stream:
    """One run's telemetry, as every detector sees it. Index 0 is stable, 1 the canary."""

    requests: Ints  # (2, seconds)
    errors: Ints  # (2, seconds)
    histograms: Ints  # (2, seconds, width): buckets low .. low + width - 1
    low: int
    lag: int

    @property
    def seconds(self) -> int:
        return int(self.requests.shape[1])

    def latency_sums(self) -> Floats:
        """(2, seconds): the latency total of each second, from the buckets' middles."""
        width = self.histograms.shape[2]
        middles = MIDDLES[self.low : self.low + width]
        return np.asarray(self.histograms @ middles, dtype=np.float64)


def latency_cdf(latency_ms: Floats, median_ms: Floats) -> Floats:
    """P(latency < x) of a lognormal; ``median_ms`` broadcasts against ``latency_ms``."""
    with np.errstate(divide="ignore"):
        logs = np.log(np.maximum(latency_ms, 0.0))
    return np.asarray(special.ndtr((logs - np.log(median_ms)) / SIGMA), dtype=np.float64)


def bucket_probabilities(scale: Floats, tail: Floats) -> Floats:
    """(len(scale), MAX_BUCKET + 1): the bucket probabilities of a lognormal latency times
    ``scale``, of which a share ``tail`` is ``TAIL_MS`` slower (a mixture)."""
    median = (MEDIAN_MS * scale)[:, None]
    plain = np.diff(latency_cdf(EDGES[None, :], median), axis=1)
    shifted = np.diff(latency_cdf(EDGES[None, :] - TAIL_MS, median), axis=1)
    return np.asarray((1.0 - tail)[:, None] * plain + tail[:, None] * shifted, dtype=np.float64)


def block_factors(
    rng: np.random.Generator, cv: float, seconds: int, block: int = BLOCK_SECONDS
) -> Floats:
    """(2, seconds): an independent Gamma factor (mean 1, coefficient of variation ``cv``) per
    side and ``block`` seconds, repeated over the block's seconds. The blocks start at a
    random phase: the fleet's wobble does not keep time with the canary's start (nor with the
    detector's blocks)."""
    shape = 1.0 / cv**2
    phase = int(rng.integers(0, block))
    blocks = -(-(seconds + phase) // block)
    factors = rng.gamma(shape, 1.0 / shape, size=(2, blocks))
    repeated = np.repeat(factors, block, axis=1)[:, phase : phase + seconds]
    return np.asarray(repeated, dtype=np.float64)


def simulate(
    scenario: Scenario,
    rng: np.random.Generator,
    *,
    canary_share: float = CANARY_SHARE,
    latency: bool = True,
) -> Stream:
    """Draw one run, every second of it at once (without ``latency``: empty histograms)."""
    seconds = scenario.seconds
    t = np.arange(seconds)
    lag = int(rng.integers(LAG_SECONDS[0], LAG_SECONDS[1] + 1)) if scenario.lag else 0
    missing = np.zeros(seconds, dtype=bool)
    if scenario.gaps:
        for _ in range(int(rng.poisson(seconds / GAP_EVERY_SECONDS))):
            start = int(rng.integers(0, seconds))
            missing[start : start + int(rng.integers(GAP_SECONDS[0], GAP_SECONDS[1] + 1))] = True

    rate = np.full(seconds, RATE)
    if scenario.ramp:
        rate *= np.linspace(RAMP[0], RAMP[1], seconds)
    total = rng.poisson(rate)
    canary = rng.binomial(total, canary_share)
    requests = np.stack([total - canary, canary]).astype(np.int64)

    error_scale = np.ones((2, seconds))
    latency_scale = np.ones((2, seconds))
    tail = np.zeros((2, seconds))
    if scenario.incident:
        middle = seconds // 2
        error_scale[:, middle - INCIDENT_SECONDS // 2 : middle + INCIDENT_SECONDS // 2] *= (
            INCIDENT_ERRORS
        )
    if scenario.warmup:
        error_scale[1, :WARMUP_SECONDS] *= WARMUP_ERRORS
        latency_scale[1, :WARMUP_SECONDS] *= WARMUP_LATENCY
    after = t >= scenario.onset
    error_scale[1, after] *= scenario.error_ratio
    latency_scale[1, after] *= scenario.latency_ratio
    tail[1, after] = scenario.tail_share
    if scenario.error_dispersion_cv > 0:
        error_scale *= block_factors(
            rng, scenario.error_dispersion_cv, seconds, scenario.wobble_seconds
        )
    if scenario.latency_wobble_cv > 0:
        latency_scale *= block_factors(
            rng, scenario.latency_wobble_cv, seconds, scenario.wobble_seconds
        )
    errors = rng.binomial(requests, np.minimum(ERROR_RATE * error_scale, 1.0)).astype(np.int64)
    if not latency:
        requests[:, missing] = 0
        errors[:, missing] = 0
        return Stream(requests, errors, np.zeros((2, seconds, 1), dtype=np.int64), 0, lag)

    # one multinomial per second and side, over the few distinct latency distributions
    keys = np.stack([latency_scale.ravel(), tail.ravel()], axis=1)
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    table = bucket_probabilities(distinct[:, 0], distinct[:, 1])
    used = np.nonzero(table.max(axis=0) > 1e-12)[0]
    low, high = int(used[0]), int(used[-1])
    cropped = table[:, low : high + 1].copy()
    cropped[:, 0] += table[:, :low].sum(axis=1)
    cropped[:, -1] += table[:, high + 1 :].sum(axis=1)
    cropped /= cropped.sum(axis=1, keepdims=True)
    pvals = cropped[inverse.reshape(-1)]
    histograms = rng.multinomial(requests.ravel(), pvals).reshape(2, seconds, -1)

    requests[:, missing] = 0
    errors[:, missing] = 0
    histograms[:, missing, :] = 0
    return Stream(requests, errors, histograms.astype(np.int64), low, lag)


# -- canaryguard and the oracle ----------------------------------------------------------------

CHUNK_SECONDS = 60
TICK_WARMUP = 30


def histogram_rows(histograms: Ints, low: int) -> list[dict[int, int]]:
    """Sparse ``{bucket: count}`` maps of a (seconds, width) block of histograms."""
    rows, columns = np.nonzero(histograms)
    bounds = np.searchsorted(rows, np.arange(histograms.shape[0] + 1)).tolist()
    buckets = (columns + low).tolist()
    counts = histograms[rows, columns].tolist()
    return [
        dict(zip(buckets[a:b], counts[a:b], strict=True)) for a, b in itertools.pairwise(bounds)
    ]


def history_for(
    scenario: Scenario, rng: np.random.Generator, seconds: int, *, latency: bool = True
) -> Stream:
    """Stable's traffic before the canary started: all of it on stable, with the run's
    over-dispersion, latency wobble and gaps (the fleet's character; no incident, no ramp)."""
    before = Scenario(
        "history",
        "history",
        seconds,
        error_dispersion_cv=scenario.error_dispersion_cv,
        latency_wobble_cv=scenario.latency_wobble_cv,
        wobble_seconds=scenario.wobble_seconds,
        gaps=scenario.gaps,
    )
    return simulate(before, rng, canary_share=0.0, latency=latency)


def swings_for(
    scenario: Scenario, rng: np.random.Generator, history: Stream, seconds: int
) -> list[Counts]:
    """Stable's last ``seconds`` before the canary, from which an unset dispersion block is
    chosen: ``history`` preceded by more of the same fleet (errors only: the choice reads no
    latency). The earlier part is drawn apart from ``history``, so the wobble restarts where
    they meet: one pair of blocks in an hour."""
    earlier = history_for(scenario, rng, seconds - history.seconds, latency=False)
    requests = np.concatenate([earlier.requests[0], history.requests[0]]).tolist()
    errors = np.concatenate([earlier.errors[0], history.errors[0]]).tolist()
    return [Counts(n, e) for n, e in zip(requests, errors, strict=True)]


def canaryguard(
    stream: Stream,
    scenario: Scenario,
    history: Stream | None = None,
    block_seconds: int | None = DETECTOR_BLOCK_SECONDS,
    swings: Sequence[Counts] | None = None,
) -> tuple[float, str, int]:
    """Seconds from the onset to the rollback decision (inf: none in the run), the test, and
    the dispersion block used; the detector first learns from ``history`` (stable's traffic
    before the canary), if any, and chooses an unset block from ``swings``."""
    config = DetectorConfig(
        warmup_seconds=float(scenario.grace),
        block_seconds=block_seconds or DetectorConfig().block_seconds,
        choose_block=block_seconds is None,
    )
    detector = Detector(config, started_at=0.0)
    if history is not None:
        rows = histogram_rows(history.histograms[0], history.low)
        before_r, before_e = history.requests[0].tolist(), history.errors[0].tolist()
        detector.prime(
            [Counts(n, e, h) for n, e, h in zip(before_r, before_e, rows, strict=True)],
            swings=swings,
        )
    block = detector.config.block_seconds
    last = stream.seconds - 1 - stream.lag  # later verdicts would land after the run
    requests = stream.requests.tolist()
    errors = stream.errors.tolist()
    for start in range(0, last + 1, CHUNK_SECONDS):
        stop = min(start + CHUNK_SECONDS, last + 1)
        stable_h = histogram_rows(stream.histograms[0, start:stop], stream.low)
        canary_h = histogram_rows(stream.histograms[1, start:stop], stream.low)
        for i, second in enumerate(range(start, stop)):
            verdict = detector.update(
                second,
                stable=Counts(requests[0][second], errors[0][second], stable_h[i]),
                canary=Counts(requests[1][second], errors[1][second], canary_h[i]),
            )
            if verdict.kind is VerdictKind.REGRESSION:
                return float(second + 1 + stream.lag - scenario.onset), verdict.condition, block
    return math.inf, "", block


def oracle_events(stream: Stream, scenario: Scenario) -> tuple[Ints, Ints, float, float]:
    """What the oracle counts per second (events, trials) and the true p0 and p1."""
    if scenario.latency_ratio != 1.0 or scenario.tail_share > 0:
        z = 0.0 if scenario.latency_ratio != 1.0 else float(special.ndtri(0.99))
        edge = round(math.log(MEDIAN_MS * math.exp(SIGMA * z)) / math.log(GROWTH))
        ones = np.ones(1)
        before = bucket_probabilities(ones, np.zeros(1))[0]
        after = bucket_probabilities(ones * scenario.latency_ratio, ones * scenario.tail_share)[0]
        column = max(edge - stream.low, 0)
        canary = stream.histograms[1]
        events = np.asarray(canary[:, column:].sum(axis=1), dtype=np.int64)
        trials = np.asarray(canary.sum(axis=1), dtype=np.int64)
        return events, trials, float(before[edge:].sum()), float(after[edge:].sum())
    ratio = scenario.error_ratio if scenario.regression else 2.0
    return stream.errors[1], stream.requests[1], ERROR_RATE, ERROR_RATE * ratio


def oracle(stream: Stream, scenario: Scenario) -> float:
    """Wald's SPRT with the true rates, upper boundary only: seconds to the rollback."""
    events, trials, p0, p1 = oracle_events(stream, scenario)
    llr = events * math.log(p1 / p0) + (trials - events) * math.log((1 - p1) / (1 - p0))
    llr[: scenario.grace] = 0.0
    over = np.nonzero(np.cumsum(llr) >= math.log(1 / ALPHA))[0]
    if over.size == 0 or over[0] + 1 + stream.lag > stream.seconds:
        return math.inf
    return float(over[0] + 1 + stream.lag - scenario.onset)


# -- the baselines -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One schedule of checks and what each check measures (its statistic: higher is worse)."""

    name: str
    kind: str  # fixed | flagger | argo | kayenta
    interval: int
    window: int  # seconds of data per check; 0: all since the analysis began
    grace: bool  # has a documented way to wait out the canary's warm-up

    def times(self, scenario: Scenario) -> Ints:
        start = scenario.grace if self.grace else 0
        return np.arange(start + self.interval, scenario.seconds + 1, self.interval)


FAMILIES = (
    Family("fixed", "fixed", 30, 300, grace=False),
    Family("flagger", "flagger", 60, 60, grace=False),
    Family("argo-1m", "argo", 60, 60, grace=True),
    Family("argo-5m", "argo", 300, 300, grace=True),
    Family("kayenta-5m", "kayenta", 300, 0, grace=True),
    Family("kayenta-30m", "kayenta", 1800, 0, grace=True),
)
FAMILY = {family.name: family for family in FAMILIES}
FIXED_ERRORS = 0.05
FIXED_LATENCY_MS = 1000.0
FLAGGER_SUCCESS = 0.99
FLAGGER_P99_MS = 500.0
ARGO_SUCCESS = 0.95
KAYENTA_P = 0.05


def cumulative(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Running sums along the first axis with a leading zero row: window sums by difference."""
    zero = np.zeros((1, *values.shape[1:]), dtype=values.dtype)
    return np.concatenate([zero, np.cumsum(values, axis=0)])


def histogram_quantile(q: float, histograms: Ints, low: int) -> Floats:
    """Prometheus' ``histogram_quantile`` of each row: linear inside the bucket (NaN: empty)."""
    total = histograms.sum(axis=1)
    rank = q * total
    running = np.cumsum(histograms, axis=1)
    index = np.minimum((running < rank[:, None]).sum(axis=1), histograms.shape[1] - 1)
    rows = np.arange(histograms.shape[0])
    before = np.where(index > 0, running[rows, np.maximum(index - 1, 0)], 0)
    inside = histograms[rows, index]
    lower, upper = EDGES[low + index], EDGES[low + index + 1]
    share = (rank - before) / np.maximum(inside, 1)
    value = np.where(np.isinf(upper), lower, lower + (upper - lower) * share)
    return np.asarray(np.where(total > 0, value, np.nan), dtype=np.float64)


def window_statistics(family: Family, stream: Stream, scenario: Scenario) -> Floats:
    """Fixed thresholds, Flagger and Argo: one statistic per check, failing when above a line:
    the canary's error share, ``inf`` where another condition fails."""
    times = family.times(scenario)
    ends = np.maximum(times - stream.lag, 0)
    first = scenario.grace if family.grace else 0
    starts = np.minimum(np.maximum(ends - family.window, first), ends)
    requests = cumulative(stream.requests[1])
    errors = cumulative(stream.errors[1])
    n = (requests[ends] - requests[starts]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (errors[ends] - errors[starts]) / n
    if family.kind == "fixed":
        latency = cumulative(stream.latency_sums()[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (latency[ends] - latency[starts]) / n
        failed = np.nan_to_num(share, nan=-np.inf)
        return np.asarray(np.where(mean > FIXED_LATENCY_MS, np.inf, failed), dtype=np.float64)
    if family.kind == "flagger":
        histograms = cumulative(stream.histograms[1])
        p99 = histogram_quantile(0.99, histograms[ends] - histograms[starts], stream.low)
        failed = (p99 > FLAGGER_P99_MS) | (n == 0)  # no values: the check fails
        return np.asarray(np.where(failed, np.inf, share), dtype=np.float64)
    # Argo: no data is a measurement error, not a failure
    return np.asarray(np.nan_to_num(share, nan=-np.inf), dtype=np.float64)


def kayenta_statistics(family: Family, stream: Stream, scenario: Scenario) -> Floats:
    """One ``1 - p`` per check: the smaller p of the two one-sided Mann-Whitney tests."""
    times = family.times(scenario)
    blocks = stream.seconds // BLOCK_SECONDS
    cut = blocks * BLOCK_SECONDS

    def per_block(values: npt.NDArray[Any]) -> Floats:
        shaped = values[:, :cut].reshape(2, blocks, BLOCK_SECONDS)
        return np.asarray(shaped.sum(axis=2), dtype=np.float64)

    requests = per_block(stream.requests)
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics = (
            per_block(stream.errors) / requests,
            per_block(stream.latency_sums()) / requests,
        )
    first = (scenario.grace if family.grace else 0) // BLOCK_SECONDS
    out = np.empty(len(times))
    for k, t in enumerate(times.tolist()):
        last = (t - stream.lag) // BLOCK_SECONDS  # blocks wholly arrived by t
        p = 1.0
        for metric in metrics:
            canary, stable = metric[1, first:last], metric[0, first:last]
            canary, stable = canary[~np.isnan(canary)], stable[~np.isnan(stable)]
            if min(canary.size, stable.size) < MIN_BLOCKS:
                continue
            result = stats.mannwhitneyu(canary, stable, alternative="greater")
            value = float(result.pvalue)
            p = min(p, 1.0 if math.isnan(value) else value)
        out[k] = 1.0 - p
    return out


def family_statistics(family: Family, stream: Stream, scenario: Scenario) -> Floats:
    if family.kind == "kayenta":
        return kayenta_statistics(family, stream, scenario)
    return window_statistics(family, stream, scenario)


@dataclass(frozen=True, slots=True)
class Rule:
    """A baseline's decision: roll back once ``failures`` checks had a statistic above
    ``limit``."""

    label: str
    family: str
    limit: float
    failures: int
    tuned: bool = False

    def line(self) -> str:
        kind = FAMILY[self.family].kind
        if kind == "fixed":
            return f"error rate > {self.limit:.2%}"
        if kind == "flagger":
            return f"success rate >= {100 * (1 - self.limit):.2f} %"
        if kind == "argo":
            return f"result >= {1 - self.limit:.4f}"
        return f"p < {1 - self.limit:.2g}"


RULES = (
    Rule("fixed thresholds (5 %, 1 s)", "fixed", FIXED_ERRORS, 1),
    Rule("Flagger, threshold 1", "flagger", 1 - FLAGGER_SUCCESS, 1),
    Rule("Flagger, threshold 10", "flagger", 1 - FLAGGER_SUCCESS, 10),
    Rule("Argo, 1 min, failureLimit 0", "argo-1m", 1 - ARGO_SUCCESS, 1),
    Rule("Argo, 5 min, failureLimit 3", "argo-5m", 1 - ARGO_SUCCESS, 4),
    Rule("Kayenta, 5 min intervals", "kayenta-5m", 1 - KAYENTA_P, 1),
    Rule("Kayenta, 30 min interval", "kayenta-30m", 1 - KAYENTA_P, 1),
)
CANARYGUARD = "canaryguard"
COLD = "canaryguard, no history"
ORACLE = "oracle SPRT (true rates)"


def decide(times: Ints, statistics: Floats, rule: Rule) -> Floats:
    """Per run, the time of the check at which ``rule`` rolls back (inf: never)."""
    if statistics.shape[1] == 0:
        return np.full(statistics.shape[0], np.inf)
    reached = np.cumsum(statistics > rule.limit, axis=1) >= rule.failures
    first = np.argmax(reached, axis=1)
    return np.where(reached.any(axis=1), times[first].astype(np.float64), np.inf)


def calibrate(
    statistics: Floats, rule: Rule, rate: float = TUNED_RATE, *, suffix: str = "tuned"
) -> Rule:
    """The same rule with the line that a share ``rate`` of these (null) runs exceed."""
    runs, checks = statistics.shape
    label = f"{rule.label}, {suffix}"
    if checks < rule.failures:
        return replace(rule, label=label, tuned=True)
    # a run rolls back iff its failures-th largest statistic is above the line
    kth = -np.sort(-statistics, axis=1)[:, rule.failures - 1]
    ordered = np.sort(kth)[::-1]
    limit = float(ordered[min(math.floor(rate * runs), runs - 1)])
    return replace(rule, label=label, limit=limit, tuned=True)


# -- running the runs (worker processes) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    scenario: str
    key: str  # seeds: the scenario's name, or CALIBRATION
    start: int
    stop: int
    seed: int
    detector: bool
    history: int = HISTORY_SECONDS
    block_seconds: int | None = DETECTOR_BLOCK_SECONDS  # canaryguard's dispersion_block_seconds


@dataclass
class Outcome:
    """What a set of runs of one scenario gave, per run."""

    canaryguard: Floats
    conditions: list[str]
    slow_blocks: int  # runs (with history) in which canaryguard chose minute blocks
    cold: Floats  # canaryguard without stable's history
    oracle: Floats
    statistics: dict[str, Floats]


def rng_for(seed: int, key: str, run: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), run])


def run_task(task: Task) -> Outcome:
    scenario = SCENARIOS[task.scenario]
    runs = task.stop - task.start
    found = np.full(runs, np.inf)
    cold = np.full(runs, np.inf)
    conditions = [""] * runs
    floor = np.full(runs, np.inf)
    slow = 0
    statistics = {family.name: np.empty((runs, len(family.times(scenario)))) for family in FAMILIES}
    for i, run in enumerate(range(task.start, task.stop)):
        stream = simulate(scenario, rng_for(task.seed, task.key, run))
        if task.detector:
            cold[i], conditions[i], _ = canaryguard(stream, scenario, None, task.block_seconds)
            if task.history:
                history = history_for(
                    scenario, rng_for(task.seed, f"{task.key}/history", run), task.history
                )
                span = history_span(
                    RollbackConfig(
                        history_seconds=task.history, dispersion_block_seconds=task.block_seconds
                    )
                )
                swings = (
                    swings_for(
                        scenario, rng_for(task.seed, f"{task.key}/swings", run), history, span
                    )
                    if span > task.history
                    else None
                )
                found[i], conditions[i], block = canaryguard(
                    stream, scenario, history, task.block_seconds, swings
                )
                slow += block == SLOW_BLOCK_SECONDS
            else:
                found[i] = cold[i]
        floor[i] = oracle(stream, scenario)
        for family in FAMILIES:
            statistics[family.name][i] = family_statistics(family, stream, scenario)
    return Outcome(found, conditions, slow, cold, floor, statistics)


def merge(outcomes: Sequence[Outcome]) -> Outcome:
    return Outcome(
        np.concatenate([o.canaryguard for o in outcomes]),
        [c for o in outcomes for c in o.conditions],
        sum(o.slow_blocks for o in outcomes),
        np.concatenate([o.cold for o in outcomes]),
        np.concatenate([o.oracle for o in outcomes]),
        {
            family.name: np.concatenate([o.statistics[family.name] for o in outcomes])
            for family in FAMILIES
        },
    )


def tasks_for(
    key: str,
    scenario: str,
    runs: int,
    seed: int,
    *,
    detector: bool,
    history: int = 0,
    block_seconds: int | None = DETECTOR_BLOCK_SECONDS,
) -> list[Task]:
    size = 20 if SCENARIOS[scenario].seconds > REGRESSION_SECONDS else 50
    return [
        Task(scenario, key, start, min(start + size, runs), seed, detector, history, block_seconds)
        for start in range(0, runs, size)
    ]


def run_all(jobs: dict[str, list[Task]], workers: int, started: float) -> dict[str, Outcome]:
    """Every job's tasks on ``workers`` processes; a job's outcome in run order."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: dict[str, list[Future[Outcome]]] = {
            name: [pool.submit(run_task, task) for task in tasks] for name, tasks in jobs.items()
        }
        results: dict[str, Outcome] = {}
        for name, pending in futures.items():
            results[name] = merge([future.result() for future in pending])
            runs = len(results[name].oracle)
            print(
                f"  {name}: {runs} runs done at {time.perf_counter() - started:.0f} s", flush=True
            )
    return results


# -- CPU per tick ------------------------------------------------------------------------------


def null_feeds(canaries: int, seconds: int, seed: int) -> list[list[tuple[Counts, Counts]]]:
    """Per canary, ``seconds`` of its own simulated null traffic as (stable, canary) counts."""
    scenario = replace(SCENARIOS["null"], seconds=seconds)
    feeds = []
    for k in range(canaries):
        stream = simulate(scenario, rng_for(seed, "cpu", k))
        requests, errors = stream.requests.tolist(), stream.errors.tolist()
        stable = histogram_rows(stream.histograms[0], stream.low)
        canary = histogram_rows(stream.histograms[1], stream.low)
        feeds.append(
            [
                (
                    Counts(requests[0][s], errors[0][s], stable[s]),
                    Counts(requests[1][s], errors[1][s], canary[s]),
                )
                for s in range(seconds)
            ]
        )
    return feeds


def tick_cost(canaries: int, ticks: int, seed: int) -> tuple[float, int]:
    """CPU milliseconds of one tick of ``canaries`` detectors, each fed its own simulated null
    canary, after ``TICK_WARMUP`` unmeasured seconds; how many had (falsely) decided by then."""
    feeds = null_feeds(canaries, TICK_WARMUP + ticks, seed)
    detectors = [Detector(DetectorConfig(), started_at=0.0) for _ in range(canaries)]
    for second in range(TICK_WARMUP):
        for detector, feed in zip(detectors, feeds, strict=True):
            detector.update(second, stable=feed[second][0], canary=feed[second][1])
    decided = sum(d.current().kind is VerdictKind.REGRESSION for d in detectors)
    gc.collect()
    started = time.process_time()
    for second in range(TICK_WARMUP, TICK_WARMUP + ticks):
        for detector, feed in zip(detectors, feeds, strict=True):
            detector.update(second, stable=feed[second][0], canary=feed[second][1])
    spent = time.process_time() - started
    return spent / ticks * 1000, decided


# -- reporting ---------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: Scenario
    detector: str
    times: Floats
    tuned: bool = False
    matched: bool = False  # tuned to canaryguard's own false-rollback rate on the same traffic
    one_line: bool = False  # one line per baseline, at canaryguard's rate on each goal traffic
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len(self.times)

    @property
    def decided(self) -> int:
        return int(np.isfinite(self.times).sum())

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.times, q, method="inverted_cdf"))

    def upper(self) -> float:
        """Upper end of the exact (Clopper-Pearson) 95 % interval of the decision rate."""
        if self.decided >= self.runs:
            return 1.0
        return float(stats.beta.ppf(0.975, self.decided + 1, self.runs - self.decided))


def seconds_text(value: float, horizon: int) -> str:
    return f"{value:.0f}" if math.isfinite(value) else f"> {horizon}"


def ratio_text(row: Row, reference: Row) -> str:
    mine, theirs = row.quantile(0.5), reference.quantile(0.5)
    if row.detector == CANARYGUARD:
        return "1.0"
    if math.isfinite(mine) and math.isfinite(theirs):
        return f"{mine / theirs:.1f}"
    if math.isfinite(theirs):
        return f"> {row.scenario.seconds / theirs:.0f}"
    if math.isfinite(mine):
        return f"< {mine / row.scenario.seconds:.2f}"
    return "-"


def regression_table(rows: Sequence[Row]) -> str:
    header = ["scenario", "detector", "detected", "median s", "p95 s", "speed vs canaryguard"]
    lines = [header]
    reference = {r.scenario.name: r for r in rows if r.detector == CANARYGUARD}
    for row in rows:
        horizon = row.scenario.seconds
        lines.append(
            [
                row.scenario.title,
                row.detector,
                f"{row.decided / row.runs:.1%}",
                seconds_text(row.quantile(0.5), horizon),
                seconds_text(row.quantile(0.95), horizon),
                ratio_text(row, reference[row.scenario.name]),
            ]
        )
    return markdown_table(lines, numeric={2, 3, 4, 5})


def null_table(rows: Sequence[Row]) -> str:
    header = ["scenario", "detector", "false rollbacks", "rate", "95 % upper"]
    lines = [header]
    lines += [
        [
            row.scenario.title,
            row.detector,
            f"{row.decided}/{row.runs}",
            f"{row.decided / row.runs:.2%}",
            f"{row.upper():.2%}",
        ]
        for row in rows
    ]
    return markdown_table(lines, numeric={2, 3, 4})


def rows_for(
    scenario: Scenario, outcome: Outcome, rules: Sequence[Rule], *, with_cold: bool
) -> list[Row]:
    rows = [Row(scenario, CANARYGUARD, outcome.canaryguard)]
    if with_cold:
        rows.append(Row(scenario, COLD, outcome.cold))
    rows.append(Row(scenario, ORACLE, outcome.oracle))
    return rows + baseline_rows(scenario, outcome, rules)


def baseline_rows(
    scenario: Scenario,
    outcome: Outcome,
    rules: Sequence[Rule],
    *,
    matched: bool = False,
    one_line: bool = False,
) -> list[Row]:
    rows = []
    for rule in rules:
        family = FAMILY[rule.family]
        times = decide(family.times(scenario), outcome.statistics[rule.family], rule)
        rows.append(
            Row(
                scenario,
                rule.label,
                times - scenario.onset,
                tuned=rule.tuned,
                matched=matched,
                one_line=one_line,
            )
        )
    return rows


def false_rate(outcome: Outcome) -> float:
    """The share of canaryguard's runs of a no-regression scenario that rolled back."""
    return float(np.isfinite(outcome.canaryguard).mean())


@dataclass
class Matching:
    """The baselines matched to canaryguard's false-rollback rate on one regression's traffic."""

    traffic: Scenario  # the no-regression scenario they were calibrated on
    rate: float  # canaryguard's false-rollback rate there
    rows: list[Row]  # the regression's runs under the matched lines
    # the lines matched on steady traffic instead, where this traffic is not steady: the
    # fastest of them here, and the share of this traffic's good canaries it rolls back
    steady: tuple[Row, float] | None = None


def matchings(
    chosen: Sequence[Scenario], outcomes: dict[str, Outcome], calibration: Outcome
) -> dict[str, Matching]:
    """Per regression scenario, the baselines tuned to canaryguard's own false-rollback rate on
    the same traffic (the steady null's calibration runs, or the runs of the no-regression
    scenario with the same nuisance when it ran); empty without the null scenario."""
    if "null" not in outcomes:
        return {}
    null_rate = false_rate(outcomes["null"])
    steady = [
        calibrate(calibration.statistics[rule.family], rule, null_rate, suffix="matched")
        for rule in RULES
    ]
    out: dict[str, Matching] = {}
    for scenario in (s for s in chosen if s.regression):
        outcome = outcomes[scenario.name]
        if scenario.traffic == "null" or scenario.traffic not in outcomes:
            rows = baseline_rows(scenario, outcome, steady, matched=True)
            out[scenario.name] = Matching(SCENARIOS["null"], null_rate, rows)
            continue
        traffic, own = SCENARIOS[scenario.traffic], outcomes[scenario.traffic]
        rate = false_rate(own)
        rules = [
            calibrate(own.statistics[rule.family], rule, rate, suffix="matched") for rule in RULES
        ]
        fastest = min(baseline_rows(scenario, outcome, steady), key=lambda r: r.quantile(0.5))
        rule = next(r for r in steady if r.label == fastest.detector)
        family = FAMILY[rule.family]
        wrong = decide(family.times(traffic), own.statistics[rule.family], rule)
        out[scenario.name] = Matching(
            traffic,
            rate,
            baseline_rows(scenario, outcome, rules, matched=True),
            (fastest, float(np.isfinite(wrong).mean())),
        )
    return out


# the no-regression traffic of the false-rollback goals: a line a user sets once has to
# hold canaryguard's false-rollback rate on each of them, as canaryguard's one configuration does
ONE_LINE_TRAFFIC = ("null", "null-incident", "null-dispersion")


@dataclass
class OneLine:
    """Per baseline, one line for every scenario: the strictest of the lines matched to
    canaryguard's false-rollback rate on each goal traffic, and the traffic that set it."""

    rules: list[Rule]
    bound_by: dict[str, Scenario]  # rule label -> the traffic whose match set its line
    rates: dict[str, float]  # traffic name -> canaryguard's false-rollback rate there
    rows: list[Row]  # every regression's runs under these lines


def one_line(
    chosen: Sequence[Scenario], outcomes: dict[str, Outcome], calibration: Outcome
) -> OneLine | None:
    """The baselines as a user deploys them, one line for all traffic, matched to canaryguard
    on every goal traffic (None unless all of ``ONE_LINE_TRAFFIC`` ran).

    A rule's rollbacks only fall as its line rises, so the highest of the per-traffic lines
    keeps every one of those rates."""
    if any(name not in outcomes for name in ONE_LINE_TRAFFIC):
        return None
    rates = {name: false_rate(outcomes[name]) for name in ONE_LINE_TRAFFIC}
    rules: list[Rule] = []
    bound_by: dict[str, Scenario] = {}
    for rule in RULES:
        candidates = []
        for name in ONE_LINE_TRAFFIC:
            # steady traffic: the calibration runs, as for every other tuned line
            own = calibration if name == "null" else outcomes[name]
            line = calibrate(own.statistics[rule.family], rule, rates[name], suffix="one line")
            candidates.append((line.limit, name, line))
        _, name, strictest = max(candidates, key=lambda c: c[0])
        rules.append(strictest)
        bound_by[strictest.label] = SCENARIOS[name]
    rows = [
        row
        for scenario in chosen
        if scenario.regression
        for row in baseline_rows(scenario, outcomes[scenario.name], rules, one_line=True)
    ]
    return OneLine(rules, bound_by, rates, rows)


def one_line_table(rows: Sequence[Row], lines: OneLine) -> str:
    """Per regression: canaryguard's median and the fastest baseline under one line for all
    traffic."""
    header = [
        "scenario",
        "canaryguard median s",
        "fastest baseline, one line",
        "its median s",
        "its p95 s",
        "it detected",
        "speed vs canaryguard",
    ]
    out = [header]
    for ours in (r for r in rows if r.detector == CANARYGUARD and r.scenario.regression):
        theirs = [r for r in lines.rows if r.scenario is ours.scenario]
        best = min(theirs, key=lambda r: r.quantile(0.5))
        horizon = ours.scenario.seconds
        out.append(
            [
                ours.scenario.title,
                seconds_text(ours.quantile(0.5), horizon),
                best.detector.removesuffix(", one line"),
                seconds_text(best.quantile(0.5), horizon),
                seconds_text(best.quantile(0.95), horizon),
                f"{best.decided / best.runs:.1%}",
                ratio_text(best, ours),
            ]
        )
    return markdown_table(out, numeric={1, 3, 4, 5, 6})


def matched_table(rows: Sequence[Row], matched: dict[str, Matching]) -> str:
    """Per regression: canaryguard's median and the fastest baseline tuned to its rate on the
    same traffic (and, on noisier traffic, what the lines matched on steady traffic do)."""
    header = [
        "scenario",
        "canaryguard median s",
        "matched on (canaryguard's rate)",
        "fastest matched baseline",
        "its median s",
        "its p95 s",
        "it detected",
        "matched on steady traffic instead",
    ]
    lines = [header]
    for ours in (r for r in rows if r.detector == CANARYGUARD and r.scenario.regression):
        matching = matched.get(ours.scenario.name)
        if matching is None:
            continue
        best = min(matching.rows, key=lambda r: r.quantile(0.5))
        horizon = ours.scenario.seconds
        instead = "-"
        if matching.steady is not None:
            row, wrong = matching.steady
            instead = (
                f"{row.detector.removesuffix(', matched')}: "
                f"{seconds_text(row.quantile(0.5), horizon)} s, but rolls back {wrong:.1%} "
                f"of good canaries on this traffic"
            )
        lines.append(
            [
                ours.scenario.title,
                seconds_text(ours.quantile(0.5), horizon),
                f"{matching.traffic.title} ({matching.rate:.2%})",
                best.detector.removesuffix(", matched"),
                seconds_text(best.quantile(0.5), horizon),
                seconds_text(best.quantile(0.95), horizon),
                f"{best.decided / best.runs:.1%}",
                instead,
            ]
        )
    return markdown_table(lines, numeric={1, 4, 5, 6})


Goal = tuple[str, str, bool]  # what was aimed at, what was measured, whether it was met


def speed_goals(by: dict[tuple[str, str], Row]) -> list[Goal]:
    out: list[Goal] = []
    base = by.get(("base", CANARYGUARD))
    if base is not None:
        median, p95 = base.quantile(0.5), base.quantile(0.95)
        out += [
            ("base case: median <= 20 s", seconds_text(median, 600) + " s", median <= 20),
            ("base case: p95 <= 60 s", seconds_text(p95, 600) + " s", p95 <= 60),
            (
                "base case: all detected within 10 min",
                f"{base.decided}/{base.runs}",
                base.decided == base.runs,
            ),
        ]
    for name, limit in (("errors-1.5", 90.0), ("latency-10", 60.0)):
        row = by.get((name, CANARYGUARD))
        if row is not None:
            median = row.quantile(0.5)
            goal = f"{row.scenario.title}: median <= {limit:.0f} s"
            out.append((goal, seconds_text(median, 600) + " s", median <= limit))
    tail = by.get(("tail", CANARYGUARD))
    if tail is not None:
        measured = f"{tail.decided}/{tail.runs}, p95 {seconds_text(tail.quantile(0.95), 600)} s"
        out.append(("tail: detected within 10 min", measured, tail.decided == tail.runs))
    return out


def false_rollback_goals(by: dict[tuple[str, str], Row]) -> list[Goal]:
    out: list[Goal] = []
    for name, budget in (("null", 0.005), ("null-incident", 0.01), ("null-dispersion", 0.01)):
        row = by.get((name, CANARYGUARD))
        if row is not None:
            rate = row.decided / row.runs
            goal = f"{row.scenario.title}: false rollbacks <= {budget:.1%}"
            out.append((goal, f"{rate:.2%} (95 % upper {row.upper():.2%})", rate <= budget))
    return out


def comparison_goals(rows: Sequence[Row]) -> list[Goal]:
    """Against the baselines tuned to canaryguard's own false-rollback rate when the null
    scenario ran (the goal: the same rate), both on each regression's own traffic and with one
    line for all traffic; else against those tuned to 1 %."""
    if not any(r.matched for r in rows):
        return rival_goals(rows, lambda r: r.tuned and not r.one_line, "tuned to 1 %")
    out = rival_goals(
        rows,
        lambda r: r.matched,
        "tuned to canaryguard's false-rollback rate on the same traffic",
    )
    if any(r.one_line for r in rows):
        out += rival_goals(
            rows,
            lambda r: r.one_line,
            "with one line for all traffic, at canaryguard's false-rollback rate on each goal "
            "traffic",
        )
    return out


def rival_goals(rows: Sequence[Row], rival: Callable[[Row], bool], which: str) -> list[Goal]:
    """The two comparison goals against the baseline rows that ``rival`` picks."""
    ours = [r for r in rows if r.scenario.regression and r.detector == CANARYGUARD]
    if not ours:
        return []
    beaten = [
        f"{row.scenario.name}: {other.detector}"
        for row in ours
        for other in rows
        if other.scenario is row.scenario
        and rival(other)
        and not other.quantile(0.5) > row.quantile(0.5)
    ]
    out: list[Goal] = [
        (
            f"faster (median) than every baseline {which}, in every regression",
            "yes" if not beaten else "no: " + "; ".join(beaten),
            not beaten,
        )
    ]
    base = next((r for r in ours if r.scenario.name == "base"), None)
    if base is not None:
        best = min(
            (r for r in rows if r.scenario is base.scenario and rival(r)),
            key=lambda r: r.quantile(0.5),
        )
        mine, theirs = base.quantile(0.5), best.quantile(0.5)
        ratio = theirs / mine if math.isfinite(mine) else 0.0
        out.append(
            (
                f">= 5x faster than the best baseline {which} (base case)",
                f"{ratio:.1f}x ({best.detector}, median {seconds_text(theirs, 600)} s)"
                if math.isfinite(theirs)
                else f"more than {600 / mine:.0f}x ({best.detector} never within 10 min)",
                ratio >= 5,
            )
        )
    return out


def goals(rows: Sequence[Row], tick_ms: float | None, canaries: int) -> list[Goal]:
    """The goals whose scenarios ran."""
    by = {(r.scenario.name, r.detector): r for r in rows}
    out = speed_goals(by) + false_rollback_goals(by) + comparison_goals(rows)
    if tick_ms is not None:  # the goal is 100 ms for 1,000 canaries
        limit = 0.1 * canaries
        goal = f"{canaries:,} canaries per tick < {limit:g} ms CPU"
        out.append((goal, f"{tick_ms:.1f} ms", tick_ms < limit))
    return out


def conditions_note(scenario: Scenario, outcome: Outcome) -> str:
    counts = Counter(c for c in outcome.conditions if c)
    listed = ", ".join(f"{name} {n}" for name, n in counts.most_common()) or "none"
    found = outcome.canaryguard[np.isfinite(outcome.canaryguard)]
    if not scenario.regression and found.size:
        listed += (
            f" (after {found.min():.0f} to {found.max():.0f} s, median {np.median(found):.0f} s)"
        )
    runs = len(outcome.canaryguard)
    listed += f"; minute blocks chosen in {outcome.slow_blocks} of {runs} runs"
    return f"- {scenario.title}: {listed}"


# -- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    chosen = [SCENARIOS[name] for name in args.scenarios]
    tick_ms: float | None = None
    if args.canaries:
        print(f"CPU of one tick of {args.canaries} detectors, {args.cpu_ticks} ticks", flush=True)
        tick_ms, decided = tick_cost(args.canaries, args.cpu_ticks, args.seed)
        print(
            f"  {tick_ms:.1f} ms per tick ({decided} of the detectors had decided in the "
            f"{TICK_WARMUP} s before, so returned at once)",
            flush=True,
        )

    jobs = {
        CALIBRATION: tasks_for(
            CALIBRATION, "null", args.calibration_runs, args.seed, detector=False
        )
    }
    for scenario in chosen:
        runs = args.runs if scenario.regression else args.null_runs
        jobs[scenario.name] = tasks_for(
            scenario.name,
            scenario.name,
            runs,
            args.seed,
            detector=True,
            history=args.history,
            block_seconds=args.block_seconds,
        )
    print(
        f"simulating: {args.calibration_runs} calibration runs, then "
        f"{', '.join(s.name for s in chosen)} on {args.workers} processes",
        flush=True,
    )
    outcomes = run_all(jobs, args.workers, started)

    calibration = outcomes.pop(CALIBRATION)
    tuned = [calibrate(calibration.statistics[rule.family], rule) for rule in RULES]
    rules = [rule for pair in zip(RULES, tuned, strict=True) for rule in pair]
    rows = [
        row
        for scenario in chosen
        for row in rows_for(scenario, outcomes[scenario.name], rules, with_cold=args.history > 0)
    ]
    # "faster than every baseline tuned to the same false-rollback rate": canaryguard's own
    # rate on the same traffic, the baselines' lines set to match it
    matched = matchings(chosen, outcomes, calibration)
    null_rate = false_rate(outcomes["null"]) if "null" in outcomes else None
    matched_rows = [row for matching in matched.values() for row in matching.rows]
    # the same, as a user deploys a baseline: one line, whatever the traffic turns out to be
    lines = one_line(chosen, outcomes, calibration)
    matched_rows += lines.rows if lines else []
    elapsed = time.perf_counter() - started

    print()
    print(
        f"{args.runs} runs per regression scenario ({REGRESSION_SECONDS // 60} min each), "
        f"{args.null_runs} per no-regression scenario ({NULL_SECONDS // 60} min each); "
        f"seed {args.seed}; {elapsed / 60:.1f} min on {args.workers} processes."
    )
    regression_rows = [r for r in rows if r.scenario.regression]
    null_rows = [r for r in rows if not r.scenario.regression]
    if regression_rows:
        print()
        print(
            "Regressions (time to detect from the onset; speed vs canaryguard: median / "
            "canaryguard's median, above 1 is slower):"
        )
        print()
        print(regression_table(regression_rows))
    if null_rows:
        print()
        print("No regression (a rollback is a false rollback):")
        print()
        print(null_table(null_rows))
    print()
    print(
        f"Tuned lines, each exceeded by {TUNED_RATE:.0%} of {args.calibration_runs} separate "
        "null runs:"
    )
    for rule in tuned:
        print(f"- {rule.label}: {rule.line()}")
    if matched:
        print()
        print(
            "At the same false-rollback rate on the same traffic: each baseline's line set so "
            "that its no-regression runs roll back at canaryguard's rate there (steady traffic: "
            "the calibration runs):"
        )
        print()
        print(matched_table(rows, matched))
    if lines:
        rates = ", ".join(
            f"{SCENARIOS[name].title} {rate:.2%}" for name, rate in lines.rates.items()
        )
        print()
        print(
            "With one line for all traffic, as a baseline is deployed: each baseline's line the "
            "strictest of those matched to canaryguard's false-rollback rate on each traffic of "
            f"the false-rollback goals ({rates}):"
        )
        print()
        for rule in lines.rules:
            print(f"- {rule.label}: {rule.line()} (set by {lines.bound_by[rule.label].title})")
        print()
        print(one_line_table(rows, lines))
    print()
    print("canaryguard's deciding test:")
    for scenario in chosen:
        print(conditions_note(scenario, outcomes[scenario.name]))
    checks = goals(rows + matched_rows, tick_ms, args.canaries)
    print()
    print(
        markdown_table(
            [["goal", "measured", "met"]]
            + [[goal, measured, "yes" if met else "no"] for goal, measured, met in checks],
            numeric=set(),
        )
    )
    if args.json:
        report = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "elapsed_s": elapsed,
            "tick_ms": tick_ms,
            "tuned": {rule.label: rule.limit for rule in tuned},
            "rows": [
                {
                    "scenario": row.scenario.name,
                    "detector": row.detector,
                    "runs": row.runs,
                    "decided": row.decided,
                    "median_s": row.quantile(0.5),
                    "p95_s": row.quantile(0.95),
                    "upper95": row.upper(),
                    "matched": row.matched,
                    "one_line": row.one_line,
                }
                for row in rows + matched_rows
            ],
            "canaryguard_null_rate": null_rate,
            "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in checks],
            "canaryguard_tests": {
                s.name: Counter(c for c in outcomes[s.name].conditions if c) for s in chosen
            },
        }
        write_report(args.json, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=positive, help="per regression scenario (default 500)")
    parser.add_argument("--null-runs", type=positive, help="per null scenario (default 2000)")
    parser.add_argument("--calibration-runs", type=positive, help="to tune the baselines (2000)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=DEFAULT_SCENARIOS,
        help="default: all",
    )
    add_simulation_options(parser)
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY_SECONDS,
        help="seconds of stable's traffic before each canary for canaryguard to learn from "
        f"(default {HISTORY_SECONDS}; also runs it without, as {COLD!r}; 0: only without)",
    )
    parser.add_argument(
        "--block-seconds",
        type=positive,
        default=DETECTOR_BLOCK_SECONDS,
        help="canaryguard's dispersion_block_seconds (default: unset, so 10 or, when stable's "
        "last hour swings over minutes, 60)",
    )
    parser.add_argument("--canaries", type=int, default=1000, help="for the CPU per tick; 0: skip")
    parser.add_argument("--cpu-ticks", type=positive, default=60)
    parser.add_argument("--quick", action="store_true", help="100 / 200 / 500 runs by default")
    args = parser.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (100 if quick else 500)
    args.null_runs = args.null_runs or (200 if quick else 2000)
    args.calibration_runs = args.calibration_runs or (500 if quick else 2000)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
