"""Anytime-valid detection of a canary that is worse than stable (method: ``docs/detection.md``).

Each test asks one question of the *events* of one kind (errors, or requests slower than a
quantile of stable's latency): with no regression, every event comes from the canary with
probability equal to the canary's share ``p`` of the requests in that second, so an incident
that hits both sides cancels out and traffic ramps do not matter. Against the alternative
"canary events are ``r`` times as likely per request", the likelihood ratio of one second is
``r**x / (1 + p (r - 1))**n`` for ``x`` canary events out of ``n``. A fixed mixture over ``r``
of the running products is a nonnegative martingale under no regression (Johari et al.'s
mixture SPRT), so by Ville's inequality it ever reaches ``1 / alpha`` with probability at most
``alpha``, however often it is looked at.

Real traffic is over-dispersed: counts wander more than the binomial model says. Each second's
log likelihood ratio is therefore divided by a dispersion factor ``phi >= 1`` estimated from
the data *before* that second: from how much stable's own event rate jumps from one block of
seconds to the next (the current, unfinished block included), pooled with the spread of the
canary's Pearson residuals per block (centred, so that a real shift does not inflate it) and
a prior. Stable's traffic from before the canary started (``Detector.prime``) adds its block
pairs to the drift estimate, so a steady fleet's canary is judged nearly untempered from its
first seconds and a wobbly fleet's is tempered from the start. Raising a ratio to a power
``1/phi <= 1`` keeps the product a supermartingale under the binomial model, and under
over-dispersion it restores the size the binomial model would have had (quasi-likelihood).

Pure and synchronous: the monitor, ``canaryguard replay`` and ``bench/detection.py`` all feed
this same code one settled second at a time.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from canaryguard.domain.histogram import bucket_upper_ms

__all__ = [
    "CHECKPOINT_VERSION",
    "MAX_READ_GAP_SECONDS",
    "MIN_SWING_SECONDS",
    "RATIOS",
    "SLOW_BLOCK_SECONDS",
    "SWING_SECONDS",
    "CheckpointError",
    "Counts",
    "Detector",
    "DetectorConfig",
    "SequentialTest",
    "TestState",
    "Verdict",
    "VerdictKind",
    "block_seconds_for",
    "observed_seconds",
    "read_cadence",
    "swing_index",
    "swing_ratio",
]

# The mixture over the alternative's rate ratio r: spread over the regressions worth catching,
# most of the weight on those that take minutes (1.35 to 2). A large ratio is caught in seconds
# whatever its weight, and at 1,000 req/s with 1 % errors even a test that knows the rates needs
# over 15 minutes for 1.1; it keeps a little weight for fleets with far more traffic. Each term
# costs log(1 / weight) of evidence, so 0.18 instead of 0.12 at 1.5 is 0.4 nats (about 6 s of
# the base case's errors x1.5) sooner.
RATIOS: tuple[float, ...] = (1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
_WEIGHTS: tuple[float, ...] = (0.03, 0.05, 0.13, 0.18, 0.18, 0.15, 0.1, 0.07, 0.05, 0.03, 0.03)
_LOG_RATIOS = tuple(math.log(r) for r in RATIOS)
_LOG_WEIGHTS = tuple(math.log(w / sum(_WEIGHTS)) for w in _WEIGHTS)
_LOG_TERMS = math.log(len(RATIOS))

# Choosing the dispersion block from stable's past (``block_seconds_for``): 60 s blocks when its
# error rate swings over minutes. Read over the last hour; with less than half an hour of
# traffic there are too few pairs of minutes to tell, and the block stays as configured.
SLOW_BLOCK_SECONDS = 60
SWING_SECONDS = 3_600
MIN_SWING_SECONDS = 1_800
SWING_RATIO = 4.5  # how much more the rate must wander between minutes than between 10 s
SWING_MIN_INDEX = 3.0  # and how much more than Poisson noise between minutes
# Through reads further apart than the short block (scrapes), the short index compares reads a
# scrape apart, which already share part of a minute's swing: at two reads a minute, slow
# swings show only about 3.5 times more between minutes (a fleet that wobbles every 10 s, 1 to
# 2 times). The ratio asked for goes down linearly to this at that cadence, and stays there.
SWING_RATIO_SPARSE = 2.0
_SWING_SHORT = 10  # the short block SWING_RATIO was set for
_CHI2_MEDIAN = 0.4549  # the median of a chi-squared variable with one degree of freedom

# the layout of ``Detector.checkpoint``: a checkpoint of another layout is refused, and the
# monitor then retraces the run from its start instead. 2: blocks count wall seconds (in 1
# they counted seconds with traffic, so a block's tick count meant something else)
CHECKPOINT_VERSION = 2
# a read at most this long after the one before covers the seconds between them, for the half
# hour the block choice needs (``observed_seconds``): scrapes a minute apart still do
MAX_READ_GAP_SECONDS = 60


class CheckpointError(ValueError):
    """A detector checkpoint that cannot be taken back: the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Counts:
    """One variant's outcomes in one second (or any interval): requests, errors, and the
    log-bucket latency histogram (``domain.histogram``; empty when latency was not measured)."""

    requests: int = 0
    errors: int = 0
    histogram: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """How sure the detector must be, and what it leaves alone.

    ``alpha`` is the false-rollback budget per canary, spent ``error_share`` on the error test
    and the rest evenly on one latency test per quantile in ``latency_quantiles``. Seconds
    before ``warmup_seconds`` into the canary are not evidence. ``block_seconds`` is the block
    over which dispersion is estimated; with ``choose_block``, ``Detector.prime`` replaces it
    with ``SLOW_BLOCK_SECONDS`` when stable's past shows its error rate swinging over minutes
    (``block_seconds_for``). The error test starts from ``prior_dispersion``, worth
    ``prior_blocks`` blocks of data, and bounds the rate drift it measures ``dispersion_z``
    standard errors up; the latency tests use ``latency_prior_dispersion``,
    ``latency_prior_blocks`` and ``latency_dispersion_z``.
    """

    alpha: float = 0.01
    warmup_seconds: float = 0.0
    error_share: float = 0.8
    latency_quantiles: tuple[float, ...] = (0.9, 0.99)
    min_stable_for_latency: int = 200
    block_seconds: int = 10
    choose_block: bool = True
    prior_dispersion: float = 2.1
    prior_blocks: float = 0.5
    dispersion_z: float = 1.0
    latency_prior_dispersion: float = 10.0
    latency_prior_blocks: float = 0.2
    latency_dispersion_z: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        if not 0 < self.error_share <= 1:
            raise ValueError(f"error_share must be in (0, 1], got {self.error_share}")
        if self.error_share < 1 and not self.latency_quantiles:
            raise ValueError("error_share below 1 needs at least one latency quantile")
        if any(not 0 < q < 1 for q in self.latency_quantiles):
            raise ValueError("latency quantiles are between 0 and 1")
        if self.warmup_seconds < 0 or self.block_seconds < 2:
            raise ValueError("warmup >= 0 and block_seconds >= 2")
        if min(self.prior_dispersion, self.latency_prior_dispersion) < 1:
            raise ValueError("prior dispersions are at least 1")
        if min(self.prior_blocks, self.latency_prior_blocks) <= 0:
            raise ValueError("prior_blocks and latency_prior_blocks must be above 0")
        if min(self.dispersion_z, self.latency_dispersion_z) < 0:
            raise ValueError("dispersion_z and latency_dispersion_z must be at least 0")

    def alpha_for(self, test: str) -> float:
        """The part of ``alpha`` that the test named ``test`` may spend."""
        if test == "errors":
            return self.alpha * self.error_share
        return self.alpha * (1 - self.error_share) / len(self.latency_quantiles)


class VerdictKind(StrEnum):
    HEALTHY = "healthy"
    INCONCLUSIVE = "inconclusive"
    REGRESSION = "regression"


@dataclass(frozen=True, slots=True)
class TestState:
    """One test's evidence so far, for verdicts, events and the dashboard."""

    name: str
    e_value: float
    threshold: float
    dispersion: float
    canary_events: int
    canary_requests: int
    stable_events: int
    stable_requests: int

    @property
    def canary_rate(self) -> float:
        return self.canary_events / self.canary_requests if self.canary_requests else 0.0

    @property
    def stable_rate(self) -> float:
        return self.stable_events / self.stable_requests if self.stable_requests else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the detector says of a canary after one second."""

    kind: VerdictKind
    condition: str = ""
    reason: str = ""
    tests: tuple[TestState, ...] = ()


_INCONCLUSIVE = Verdict(VerdictKind.INCONCLUSIVE)
_HEALTHY = Verdict(VerdictKind.HEALTHY)


class SequentialTest:
    """A mixture e-process on "canary events per request are ``r`` times stable's" (r > 1),
    conditioned on the events of each second, tempered by an estimated dispersion.

    ``prior``, ``prior_blocks`` and ``z`` default to the error test's settings."""

    __slots__ = (
        "_best",
        "_block",
        "_block_covered",
        "_block_expected",
        "_block_seen",
        "_block_ticks",
        "_block_variance",
        "_blocks",
        "_config",
        "_earlier",
        "_lag1",
        "_lag2",
        "_log_lr",
        "_previous",
        "_primed",
        "_prior",
        "_prior_blocks",
        "_quiet",
        "_variance_sum",
        "_z",
        "_z_m2",
        "_z_mean",
        "canary_events",
        "canary_requests",
        "dispersion",
        "name",
        "stable_events",
        "stable_requests",
        "threshold",
    )

    def __init__(
        self,
        name: str,
        alpha: float,
        config: DetectorConfig,
        *,
        prior: float | None = None,
        prior_blocks: float | None = None,
        z: float | None = None,
    ) -> None:
        self.name = name
        self.threshold = 1.0 / alpha
        self._config = config
        self._prior = config.prior_dispersion if prior is None else prior
        self._prior_blocks = config.prior_blocks if prior_blocks is None else prior_blocks
        self._z = config.dispersion_z if z is None else z
        self._log_lr = [0.0] * len(RATIOS)
        self._best = max(_LOG_WEIGHTS)  # the largest weighted term, in logs
        self.dispersion = max(1.0, self._prior)
        self.canary_events = self.canary_requests = self.stable_events = self.stable_requests = 0
        # the canary's Pearson residual per block (Welford: spread around their own mean)
        self._blocks = 0
        self._z_mean = self._z_m2 = 0.0
        self._block_seen = self._block_ticks = 0
        self._block_expected = self._block_variance = self._variance_sum = 0.0
        # the wall seconds this block's counts stand for (a scrape's stand for the interval
        # since the one before), and the seconds since the last with traffic on both sides
        self._block_covered = self._quiet = 0
        # stable's events and requests in this block and the last one: the drift of its rate
        self._block = [0, 0]
        self._previous: tuple[int, int] | None = None
        self._lag1 = [0.0, 0.0, 0.0]  # drift, its Poisson noise, pairs: blocks one apart
        # and between blocks two apart: with the lag-1 pairs, the long-run drift
        self._earlier: tuple[int, int] | None = None
        self._lag2 = [0.0, 0.0, 0.0]  # the same, blocks two apart
        self._primed = False

    def prime(self, stable_events: int, stable_n: int) -> None:
        """One second of stable's history from before the canary started: only the drift of
        stable's rate from block to block is learnt (there is no canary to compare)."""
        if self._primed:
            raise RuntimeError("history comes before the canary's first second")
        # blocks are wall seconds, as in ``update``: a gap, or a second between two scrapes,
        # is part of its block
        self._block[0] += stable_events
        self._block[1] += stable_n
        self._block_ticks += 1
        if self._block_ticks >= self._config.block_seconds:
            self._close_drift()
            self._block_ticks = 0

    def _end_history(self) -> None:
        # an unfinished block of history is dropped: the canary's first block is compared
        # with the last whole one
        if not self._primed:
            self._primed = True
            self._block = [0, 0]
            self._block_ticks = 0

    def _covers(self, canary_n: int, stable_n: int) -> int:
        # how many wall seconds this second's counts stand for: 1 when counts come every
        # second, the interval since the last counts when they come lumped by scrapes. Only
        # seconds without any counts are between scrapes: one side alone (a canary with no
        # traffic yet) means counts come every second. A gap of over a minute is a gap, as
        # in ``observed_seconds``
        if canary_n == 0 and stable_n == 0:
            self._quiet += 1
            return 0
        quiet, self._quiet = self._quiet, 0
        if canary_n == 0 or stable_n == 0:
            return 0
        return quiet + 1 if quiet < MAX_READ_GAP_SECONDS else 1

    def update(self, canary_events: int, stable_events: int, canary_n: int, stable_n: int) -> None:
        """One second: events and requests on each side."""
        self._end_history()
        self.canary_events += canary_events
        self.stable_events += stable_events
        self.canary_requests += canary_n
        self.stable_requests += stable_n
        events = canary_events + stable_events
        covers = self._covers(canary_n, stable_n)
        if covers == 0 or events == 0:
            # no evidence either way, but a second of the block all the same: blocks are wall
            # seconds, so they keep time with how fast the rates move whether the counts come
            # every second or lumped every scrape interval, and a gap is part of its block
            self._block[1] += stable_n if covers else 0
            self._block_covered += covers
            self._tick()
            return
        # the dispersion of this second comes from the seconds before it, and from this
        # second's totals only (the test conditions on them): predictable
        share = canary_n / (canary_n + stable_n)
        self.dispersion = phi = self._estimate_dispersion(events * share * (1.0 - share), covers)
        scale = 1.0 / phi
        log_lr = self._log_lr
        best = -math.inf
        for k, ratio in enumerate(RATIOS):
            log_lr[k] += scale * (
                canary_events * _LOG_RATIOS[k] - events * math.log1p(share * (ratio - 1.0))
            )
            best = max(best, _LOG_WEIGHTS[k] + log_lr[k])
        self._best = best
        self._block[0] += stable_events
        self._block[1] += stable_n
        self._block_seen += canary_events
        self._block_expected += events * share
        self._block_variance += events * share * (1.0 - share)
        self._block_covered += covers
        self._tick()

    def _tick(self) -> None:
        self._block_ticks += 1
        if self._block_ticks >= self._config.block_seconds:
            self._close_block()

    def restart_drift(self) -> None:
        """What counts as an event changed (a new latency threshold): stable's rate before
        and after are not comparable, so no drift is measured across the change."""
        self._previous = self._earlier = None
        self._block = [0, 0]

    def _close_drift(self) -> None:
        block = (self._block[0], self._block[1])
        if block[1] == 0:
            self._block = [0, 0]
            return  # a block without traffic (a gap): the next pair spans it
        for sums, before in ((self._lag1, self._previous), (self._lag2, self._earlier)):
            drift = _drift(before, block) if before is not None else None
            if drift is not None:
                sums[0] += drift[0]
                sums[1] += drift[1]
                sums[2] += 1
        self._earlier, self._previous = self._previous, block
        self._block = [0, 0]

    def _close_block(self) -> None:
        self._close_drift()
        covered = self._block_covered
        if 0 < covered < self._config.block_seconds:
            # a block partly without counts on both sides (a gap, a canary silent at first):
            # its variance scaled to a whole block's, which is what the drift's inflation of
            # a block's count is computed for
            self._variance_sum += self._block_variance * self._config.block_seconds / covered
        else:
            self._variance_sum += self._block_variance
        if self._block_variance > 0:
            z = (self._block_seen - self._block_expected) / math.sqrt(self._block_variance)
            # Welford: the spread of the residuals around their own mean, so that a steady
            # regression (a shifted mean) does not pass for dispersion
            self._blocks += 1
            delta = z - self._z_mean
            self._z_mean += delta / self._blocks
            self._z_m2 += delta * (z - self._z_mean)
        self._block_seen = self._block_ticks = self._block_covered = 0
        self._block_expected = self._block_variance = 0.0

    def _estimate_dispersion(self, now_variance: float, now_covers: int) -> float:
        # a weighted average of the prior (worth prior_blocks blocks), the dispersion implied
        # by stable's rate drift (one weight per pair of consecutive blocks, the unfinished
        # block counting for its share) and the canary's residuals (one per degree of freedom)
        ticks = self._block_ticks
        share = ticks / self._config.block_seconds if ticks >= 2 else 0.0
        drift, noise, pairs = _with_partial(self._lag1, self._previous, self._block, share)
        weight = self._prior_blocks
        total = weight * self._prior
        if pairs > 0:
            # kappa: the squared coefficient of variation of one side's rate from block to
            # block, bounded z standard errors up; both sides drifting so much independently
            # multiplies the variance of a block's canary count by 1 + 2 kappa V
            kappa, error = _kappa(drift, noise, pairs)
            drift2, noise2, pairs2 = _with_partial(
                self._lag2,
                self._earlier,
                self._block,
                share,
            )
            if pairs2 > 0:
                # the rate's wobble need not keep time with the blocks: a wobble that changes
                # mid-block is shared by neighbouring blocks, which then look alike and
                # understate it. With no correlation beyond one block, the long-run drift is
                # 3 D2 - 2 D1 (D1, D2: the drift between blocks one and two apart)
                kappa2, error2 = _kappa(drift2, noise2, pairs2)
                long_run = 3.0 * kappa2 - 2.0 * kappa
                if long_run > kappa:
                    kappa, error = long_run, math.sqrt(9.0 * error2**2 + 4.0 * error**2)
            kappa += self._z * error
            # a block's binomial variance: from the closed blocks, else extrapolated from
            # this one so far with this second (from the first second on, so that a drift
            # learnt from stable's history tempers the canary's very first seconds) to the
            # wall seconds a block's counts stand for: the block, or one scrape when scrapes
            # are further apart (a block then holds one scrape or none)
            variance = (
                self._variance_sum / self._blocks
                if self._blocks
                else (self._block_variance + now_variance)
                * max(self._config.block_seconds, now_covers)
                / (self._block_covered + now_covers)
            )
            total += pairs * (1.0 + 2.0 * kappa * variance)
            weight += pairs
        if self._blocks >= 2:
            total += self._z_m2
            weight += self._blocks - 1
        return max(1.0, total / weight)

    def checkpoint(self) -> dict[str, Any]:
        """Every number the test has learnt, as JSON-ready values (``restore`` takes them
        back); the config is the detector's and is not included."""
        state = {slot: getattr(self, slot) for slot in _TEST_SLOTS}
        for slot in _SEQUENCES:  # copies: the test goes on changing its own lists
            if state[slot] is not None:
                state[slot] = list(state[slot])
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what ``checkpoint`` gave: afterwards the test goes on exactly as the one
        it came from. Raises ``CheckpointError`` naming what does not fit, changing nothing."""
        values = _checked(f"test {self.name!r}", state, _TEST_SLOTS)
        restored = {slot: _restored(slot, getattr(self, slot), values[slot]) for slot in values}
        for slot, value in restored.items():
            setattr(self, slot, value)

    def may_reach(self, value: float) -> bool:
        """Whether the e-value may be ``value`` or more: a cheap bound (the largest weighted
        term times the number of terms) so the exact sum is only computed near a threshold."""
        return self._best + _LOG_TERMS >= math.log(value)

    @property
    def e_value(self) -> float:
        """The mixture's current value (capped far above any threshold, never overflowing)."""
        if self._best > 700:
            return math.exp(700)
        return sum(math.exp(lw + ll) for lw, ll in zip(_LOG_WEIGHTS, self._log_lr, strict=True))

    def state(self) -> TestState:
        return TestState(
            name=self.name,
            e_value=self.e_value,
            threshold=self.threshold,
            dispersion=self.dispersion,
            canary_events=self.canary_events,
            canary_requests=self.canary_requests,
            stable_events=self.stable_events,
            stable_requests=self.stable_requests,
        )


_TEST_SLOTS = tuple(slot for slot in SequentialTest.__slots__ if slot != "_config")
_PAIRS = ("_previous", "_earlier")  # stable's (events, requests) of a block, or None
_SEQUENCES = ("_block", "_lag1", "_lag2", "_log_lr", *_PAIRS)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple | list) else value


def _checked(what: str, state: Mapping[str, Any], expected: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what}: expected an object, got {type(state).__name__}")
    missing = sorted(set(expected) - state.keys())
    unknown = sorted(state.keys() - set(expected))
    if missing or unknown:
        raise CheckpointError(
            f"{what}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}"
        )
    return state


def _int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{what}: expected an integer, got {value!r}")
    return value


def _float(what: str, value: object) -> float:
    # an int is a fine float: JSON writers may drop a float's ".0"
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise CheckpointError(f"{what}: expected a number, got {value!r}")
    return float(value)


def _bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise CheckpointError(f"{what}: expected true or false, got {value!r}")
    return value


def _number(what: str, current: object, value: object) -> object:
    """``value`` checked to be of the type ``current`` (the fresh object's value) has."""
    if isinstance(current, bool):
        return _bool(what, value)
    if isinstance(current, int):
        return _int(what, value)
    if isinstance(current, float):
        return _float(what, value)
    if type(value) is not type(current):
        raise CheckpointError(f"{what}: expected {type(current).__name__}, got {value!r}")
    return value


def _restored(slot: str, current: object, value: object) -> object:
    if slot in _PAIRS:
        if value is None:
            return None
        if not (isinstance(value, list) and len(value) == 2):
            raise CheckpointError(f"{slot}: expected null or [events, requests], got {value!r}")
        return (_int(slot, value[0]), _int(slot, value[1]))
    if isinstance(current, list):
        if not (isinstance(value, list) and len(value) == len(current)):
            raise CheckpointError(f"{slot}: expected a list of {len(current)}, got {value!r}")
        return [_number(slot, old, item) for old, item in zip(current, value, strict=True)]
    return _number(slot, current, value)


def _drift(before: Sequence[int], after: Sequence[int]) -> tuple[float, float] | None:
    """How much stable's event rate moved between two stretches (events, requests): an
    unbiased estimate of the rate's squared coefficient of variation beyond Poisson noise,
    and that Poisson noise; None without events or requests."""
    (e1, n1), (e2, n2) = before, after
    if e1 + e2 == 0 or n1 == 0 or n2 == 0:
        return None
    rate = (e1 + e2) / (n1 + n2)
    m1, m2 = rate * n1, rate * n2
    noise = 1.0 / m1 + 1.0 / m2
    return ((e1 / m1 - e2 / m2) ** 2 - noise) / 2.0, noise


def _kappa(drift: float, noise: float, pairs: float) -> tuple[float, float]:
    """The mean drift over ``pairs`` (at least 0) and its standard error, about
    ``(2 kappa + Poisson noise) / sqrt(2 pairs)``."""
    kappa = max(drift / pairs, 0.0)
    return kappa, (2.0 * kappa + noise / pairs) / math.sqrt(2.0 * pairs)


def _with_partial(
    sums: Sequence[float],
    before: tuple[int, int] | None,
    block: Sequence[int],
    share: float,
) -> tuple[float, float, float]:
    """Drift sums (drift, noise, pairs) with the unfinished block's pair against ``before``
    counted for its ``share`` of a block."""
    drift, noise, pairs = sums
    partial = _drift(before, block) if before is not None and share > 0 else None
    if partial is None:
        return drift, noise, pairs
    return drift + share * partial[0], noise + share * partial[1], pairs + share


def swing_index(stable: Sequence[Counts], block_seconds: int) -> float:
    """How much stable's error rate wanders between consecutive blocks of ``block_seconds``
    seconds (wall seconds, as the tests' blocks; blocks without traffic skipped), as a multiple
    of the Poisson noise (1: not at all beyond it): the median of the squared standardised
    differences over their median under pure noise. The median, not the mean, so that a step
    (a new stable version) or an incident in the stretch, which moves a few pairs a lot, does
    not pass for a wandering rate."""
    blocks: list[tuple[int, int]] = []
    events = requests = ticks = 0
    for counts in stable:
        events += counts.errors
        requests += counts.requests
        ticks += 1
        if ticks == block_seconds:
            if requests:
                blocks.append((events, requests))
            events = requests = ticks = 0
    squares = []
    for before, after in itertools.pairwise(blocks):
        drift = _drift(before, after)
        if drift is not None:
            # 2 x the drift term plus its noise is the squared difference of the two rates'
            # ratios to their mean; standardised by the noise it is about chi-squared(1)
            squares.append((2.0 * drift[0] + drift[1]) / drift[1])
    return statistics.median(squares) / _CHI2_MEDIAN if squares else 1.0


def observed_seconds(stable: Sequence[Counts]) -> int:
    """How many of the seconds of ``stable`` its traffic covers: each second with requests
    covers itself and the seconds since the one before with requests, when that is at most
    ``MAX_READ_GAP_SECONDS`` back (a scrape's counts stand for the interval since the last;
    a longer gap is a gap)."""
    gaps = _read_gaps(stable)
    if gaps is None:
        return 0
    return 1 + sum(gap if gap <= MAX_READ_GAP_SECONDS else 1 for gap in gaps)


def _read_gaps(stable: Sequence[Counts]) -> list[int] | None:
    """The seconds between consecutive seconds with traffic; None without any traffic."""
    seconds = [second for second, counts in enumerate(stable) if counts.requests]
    if not seconds:
        return None
    return [after - before for before, after in itertools.pairwise(seconds)]


def block_seconds_for(stable: Sequence[Counts], configured: int) -> int:
    """The dispersion block for a run, from stable's seconds before it (oldest first, up to
    ``SWING_SECONDS`` of them): ``SLOW_BLOCK_SECONDS`` when its error rate wanders between
    minutes well beyond both Poisson noise and its wander between ``configured``-second blocks
    (a fleet whose rate swings over minutes, which short blocks understate:
    ``docs/detection.md``, Slow swings), else ``configured``. Half an hour of traffic at least,
    or ``configured`` (``observed_seconds``: counted alike for reports every second and
    scrapes up to a minute apart)."""
    recent = list(stable)[-SWING_SECONDS:]
    if configured >= SLOW_BLOCK_SECONDS or observed_seconds(recent) < MIN_SWING_SECONDS:
        return configured
    slow = swing_index(recent, SLOW_BLOCK_SECONDS)
    fast = swing_index(recent, configured)
    if slow >= SWING_MIN_INDEX and slow >= swing_ratio(read_cadence(recent), configured) * fast:
        return SLOW_BLOCK_SECONDS
    return configured


def read_cadence(stable: Sequence[Counts]) -> float:
    """The median number of seconds between consecutive seconds with traffic: 1 for reports
    every second, the scrape interval for counts read from Prometheus (1 without traffic)."""
    gaps = _read_gaps(stable)
    return float(statistics.median(gaps)) if gaps else 1.0


def swing_ratio(cadence: float, configured: int) -> float:
    """How many times its wander between ``configured``-second blocks the wander between
    minutes must be for minute blocks. What the short index compares is blocks of
    ``configured`` seconds, or reads ``cadence`` apart when those are further apart: at 10 s
    (or less) ``SWING_RATIO``, down linearly to ``SWING_RATIO_SPARSE`` at half a minute (two a
    minute) and beyond (measured on fleets swinging every minute against ones wobbling every
    10 s: ``docs/detection.md``, Slow swings)."""
    scale = max(cadence, configured)
    sparse = SLOW_BLOCK_SECONDS / 2
    share = min(1.0, max(0.0, (scale - _SWING_SHORT) / (sparse - _SWING_SHORT)))
    return SWING_RATIO - share * (SWING_RATIO - SWING_RATIO_SPARSE)


_DETECTOR_FIELDS = (
    "version",
    "mixture",
    "config",
    "started_at",
    "seconds",
    "primed",
    "stable_histogram",
    "stable_measured",
    "thresholds",
    "tests",
    "verdict",
)


def _slow(histogram: Mapping[int, int], above: int) -> int:
    return sum(count for bucket, count in histogram.items() if bucket > above)


def _quantile_bucket(histogram: Mapping[int, int], total: int, q: float) -> int:
    rank, seen = q * total, 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket
    return max(histogram)


class Detector:
    """The evidence against one canary, fed one settled second at a time.

    ``started_at`` is the canary's start (any time scale in seconds; ``update`` uses the same).
    Once a test crosses its threshold the verdict stays a regression.
    """

    def __init__(self, config: DetectorConfig | None = None, *, started_at: float = 0.0) -> None:
        self.started_at = started_at
        self._build(config or DetectorConfig())
        self._stable_histogram: dict[int, int] = {}
        self._stable_measured = 0
        self._thresholds: list[int] | None = None
        self._seconds = 0
        self._primed = False
        self._verdict: Verdict | None = None

    def _build(self, config: DetectorConfig) -> None:
        self.config = config
        self.errors = SequentialTest("errors", config.alpha_for("errors"), config)
        self.latency = [
            SequentialTest(
                f"latency_p{q * 100:g}",
                config.alpha_for("latency"),
                config,
                prior=config.latency_prior_dispersion,
                prior_blocks=config.latency_prior_blocks,
                z=config.latency_dispersion_z,
            )
            for q in config.latency_quantiles
        ]
        self._tests: tuple[SequentialTest, ...] = (self.errors, *self.latency)

    @property
    def tests(self) -> Sequence[SequentialTest]:
        return self._tests

    @property
    def can_prime(self) -> bool:
        """Whether ``prime`` may still be called: no history given yet, no second judged."""
        return not (self._primed or self._seconds or any(t.canary_requests for t in self.tests))

    def prime(self, history: Sequence[Counts], *, swings: Sequence[Counts] | None = None) -> None:
        """Learn from stable's seconds before the canary started (oldest first; call once,
        before ``update``): how much its error rate and its share of slow requests drift from
        block to block (each test's dispersion then starts from the fleet's own wobble instead
        of the prior alone), and its latency quantiles (the latency tests start at once).

        With ``choose_block``, the block length is chosen first (``block_seconds_for``) from
        ``swings``: a longer stretch of stable's past ending where ``history`` ends (the monitor
        gives the last hour), or ``history`` itself when None. When that chooses minute blocks,
        everything is learnt from ``swings`` instead of ``history``.

        Only stable's side is used and nothing here is evidence against the canary: the
        e-processes start at the canary's first second as before."""
        if self._primed:
            raise RuntimeError("the history was given already")
        if not self.can_prime:
            raise RuntimeError("history comes before the canary's first second")
        self._primed = True
        if self.config.choose_block:
            block = block_seconds_for(
                history if swings is None else swings, self.config.block_seconds
            )
            if block != self.config.block_seconds:
                self._build(replace(self.config, block_seconds=block))
                if swings is not None and len(swings) > len(history):
                    # ten minutes hold only nine pairs of minutes: the drift is learnt from the
                    # whole stretch the choice read
                    history = swings
        for counts in history:
            self._learn_latency(counts.histogram)
        if self._stable_measured >= self.config.min_stable_for_latency:
            self._thresholds = self._quantile_thresholds()
        for counts in history:
            self.errors.prime(counts.errors, counts.requests)
            if self._thresholds is not None:  # a second without latency: one of the block's
                measured = sum(counts.histogram.values())
                for test, above in zip(self.latency, self._thresholds, strict=True):
                    test.prime(_slow(counts.histogram, above), measured)

    def checkpoint(self) -> dict[str, Any]:
        """Everything the detector has learnt, as a JSON-ready object: its config, each
        test's evidence and dispersion estimate, stable's latency quantiles and the verdict.
        ``Detector.from_checkpoint`` rebuilds a detector that goes on exactly as this one
        (floats survive JSON exactly), so a process that takes a run over resumes the
        evidence instead of looking again (``docs/detection.md``, controller restarts)."""
        verdict = self._verdict
        return {
            "version": CHECKPOINT_VERSION,
            "mixture": [list(RATIOS), list(_WEIGHTS)],
            "config": {f.name: _plain(getattr(self.config, f.name)) for f in fields(self.config)},
            "started_at": self.started_at,
            "seconds": self._seconds,
            "primed": self._primed,
            "stable_histogram": [list(item) for item in sorted(self._stable_histogram.items())],
            "stable_measured": self._stable_measured,
            "thresholds": _plain(self._thresholds),
            "tests": [test.checkpoint() for test in self.tests],
            "verdict": None
            if verdict is None
            else {
                "kind": verdict.kind.value,
                "condition": verdict.condition,
                "reason": verdict.reason,
                "tests": [asdict(state) for state in verdict.tests],
            },
        }

    @classmethod
    def from_checkpoint(cls, data: Mapping[str, Any]) -> Detector:
        """The detector ``checkpoint`` described. Raises ``CheckpointError`` naming what is wrong
        (another layout version, a missing or unknown field, a value of the wrong type)."""
        data = _checked("checkpoint", data, _DETECTOR_FIELDS)
        if data["version"] != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"checkpoint: layout version {data['version']!r}, this detector reads "
                f"{CHECKPOINT_VERSION}"
            )
        if data["mixture"] != [list(RATIOS), list(_WEIGHTS)]:
            # the running log likelihood ratios belong to the ratios they were computed for
            raise CheckpointError("checkpoint: written for another mixture of rate ratios")
        try:
            config = _checked("config", data["config"], [f.name for f in fields(DetectorConfig)])
            defaults = DetectorConfig()
            settings: dict[str, Any] = {
                name: tuple(_float(name, q) for q in value)
                if name == "latency_quantiles"
                else _number(name, getattr(defaults, name), value)
                for name, value in config.items()
            }
            detector = cls(
                DetectorConfig(**settings),
                started_at=_float("started_at", data["started_at"]),
            )
            detector._seconds = _int("seconds", data["seconds"])
            detector._primed = _bool("primed", data["primed"])
            detector._stable_histogram = {
                _int("stable_histogram", bucket): _int("stable_histogram", count)
                for bucket, count in data["stable_histogram"]
            }
            detector._stable_measured = _int("stable_measured", data["stable_measured"])
            thresholds = data["thresholds"]
            detector._thresholds = (
                None if thresholds is None else [_int("thresholds", t) for t in thresholds]
            )
            tests = data["tests"]
            if not isinstance(tests, list) or len(tests) != len(detector.tests):
                raise CheckpointError(f"tests: expected {len(detector.tests)} tests, got {tests!r}")
            for test, state in zip(detector.tests, tests, strict=True):
                test.restore(state)
            verdict = data["verdict"]
            if verdict is not None:
                detector._verdict = Verdict(
                    VerdictKind(verdict["kind"]),
                    condition=str(verdict["condition"]),
                    reason=str(verdict["reason"]),
                    tests=tuple(TestState(**state) for state in verdict["tests"]),
                )
        except CheckpointError:
            raise
        except (TypeError, KeyError, ValueError, OverflowError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint: malformed ({exc})") from exc
        return detector

    def _learn_latency(self, histogram: Mapping[int, int]) -> None:
        for bucket, count in histogram.items():
            self._stable_histogram[bucket] = self._stable_histogram.get(bucket, 0) + count
            self._stable_measured += count

    def _quantile_thresholds(self) -> list[int]:
        return [
            _quantile_bucket(self._stable_histogram, self._stable_measured, q)
            for q in self.config.latency_quantiles
        ]

    def update(self, second: float, stable: Counts, canary: Counts) -> Verdict:
        """Take one second's outcomes of both sides and say what the evidence shows now."""
        if self._verdict is not None:
            return self._verdict
        if second - self.started_at < self.config.warmup_seconds:
            return Verdict(VerdictKind.INCONCLUSIVE, reason="warming up")
        self.errors.update(canary.errors, stable.errors, canary.requests, stable.requests)
        if self.latency and canary.histogram and stable.histogram:
            self._update_latency(stable, canary)
        elif self._thresholds is not None:
            # no latency this second (a gap, a second between scrapes), but a wall second of
            # the latency tests' blocks all the same
            for test in self.latency:
                test.update(0, 0, 0, 0)
        self._seconds += 1
        for test in self.tests:
            if test.may_reach(test.threshold) and test.e_value >= test.threshold:
                self._verdict = Verdict(
                    VerdictKind.REGRESSION,
                    condition=test.name,
                    reason=self.explain(test.state()),
                    tests=tuple(t.state() for t in self.tests),
                )
                return self._verdict
        return self.current()

    def _update_latency(self, stable: Counts, canary: Counts) -> None:
        # thresholds come from stable's histogram *before* this second: predictable, so the
        # test stays valid; refreshed after 1, 2, 4, ... 64 blocks of judged seconds and then
        # every 64 (quantiles settle fast, and each change restarts the drift estimate)
        if self._thresholds is not None:
            canary_n = sum(canary.histogram.values())
            stable_n = sum(stable.histogram.values())
            for test, above in zip(self.latency, self._thresholds, strict=True):
                test.update(
                    _slow(canary.histogram, above),
                    _slow(stable.histogram, above),
                    canary_n,
                    stable_n,
                )
        self._learn_latency(stable.histogram)
        if self._stable_measured >= self.config.min_stable_for_latency and (
            self._thresholds is None or self._refresh_due()
        ):
            thresholds = self._quantile_thresholds()
            if self._thresholds is not None:
                for test, old, new in zip(self.latency, self._thresholds, thresholds, strict=True):
                    if old != new:
                        test.restart_drift()
            self._thresholds = thresholds

    def _refresh_due(self) -> bool:
        blocks, rest = divmod(self._seconds, self.config.block_seconds)
        return rest == 0 and blocks > 0 and (blocks & (blocks - 1) == 0 or blocks % 64 == 0)

    def current(self) -> Verdict:
        """The verdict as it stands, without new data."""
        if self._verdict is not None:
            return self._verdict
        # the tests' states are built only on request (``states``): this runs every second for
        # every canary, and the exact e-values cost most of a tick
        if self.errors.canary_requests == 0 or any(
            t.may_reach(1.0) and t.e_value >= 1 for t in self.tests
        ):
            return _INCONCLUSIVE
        return _HEALTHY

    def states(self) -> tuple[TestState, ...]:
        """Every test's evidence now."""
        return tuple(t.state() for t in self.tests)

    def explain(self, state: TestState) -> str:
        """The evidence of ``state`` in plain words, with the figures."""
        evidence = (
            f"e-value {state.e_value:,.0f} >= {state.threshold:,.0f}, "
            f"over {state.canary_requests:,} canary requests"
        )
        if state.name == "errors":
            return (
                f"canary errors {state.canary_rate:.2%} vs stable {state.stable_rate:.2%}, "
                f"{evidence}"
            )
        index = [t.name for t in self.latency].index(state.name)
        quantile = self.config.latency_quantiles[index]
        limit = bucket_upper_ms(self._thresholds[index]) if self._thresholds else 0.0
        return (
            f"canary requests slower than stable's p{quantile * 100:g} (~{limit:,.0f} ms): "
            f"{state.canary_rate:.1%} vs stable {state.stable_rate:.1%}, {evidence}"
        )
