"""Choosing the dispersion block from stable's last hour: 60 s blocks for a fleet whose error
rate swings over minutes, 10 s otherwise, and never fooled by a step or an incident."""

from __future__ import annotations

import random
from collections.abc import Callable

from canaryguard.domain.detector import (
    MIN_SWING_SECONDS,
    SLOW_BLOCK_SECONDS,
    SWING_SECONDS,
    Counts,
    Detector,
    DetectorConfig,
    block_seconds_for,
    swing_index,
)
from canaryguard.domain.judge import Judge, history_span
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.windows import SecondStats


def stable(seconds: int, rate: Callable[[int], float], *, seed: int = 1) -> list[Counts]:
    """Stable alone, 1,000 requests a second, each erring with probability ``rate(second)``."""
    rng = random.Random(seed)
    return [Counts(1000, sum(rng.random() < rate(s) for _ in range(1000))) for s in range(seconds)]


def swinging(period: int, *, seed: int = 1) -> Callable[[int], float]:
    """An error rate of 1 % times a factor (mean 1, CV 0.3) drawn anew every ``period`` s."""
    rng = random.Random(seed)
    factors = [rng.gammavariate(1 / 0.09, 0.09) for _ in range(SWING_SECONDS // period + 2)]
    return lambda s: 0.01 * factors[s // period]


def steady(_: int) -> float:
    return 0.01


def test_steady_traffic_wanders_no_more_than_poisson_noise() -> None:
    assert 0.5 < swing_index(stable(SWING_SECONDS, steady), 60) < 2


def test_an_hour_of_steady_traffic_keeps_the_ten_second_block() -> None:
    assert block_seconds_for(stable(SWING_SECONDS, steady), 10) == 10


def test_an_hour_of_rates_wobbling_every_ten_seconds_keeps_the_ten_second_block() -> None:
    assert block_seconds_for(stable(SWING_SECONDS, swinging(10)), 10) == 10


def test_an_hour_of_rates_swinging_every_minute_chooses_the_minute_block() -> None:
    assert block_seconds_for(stable(SWING_SECONDS, swinging(60)), 10) == SLOW_BLOCK_SECONDS


def test_a_step_in_stable_s_error_rate_is_not_taken_for_slow_swings() -> None:
    history = stable(SWING_SECONDS, lambda s: 0.01 if s < SWING_SECONDS // 2 else 0.025)
    assert block_seconds_for(history, 10) == 10


def test_an_incident_in_the_hour_is_not_taken_for_slow_swings() -> None:
    history = stable(SWING_SECONDS, lambda s: 0.05 if 1700 <= s < 1820 else 0.01)
    assert block_seconds_for(history, 10) == 10


def test_under_half_an_hour_of_traffic_keeps_the_configured_block() -> None:
    history = stable(MIN_SWING_SECONDS - 1, swinging(60))
    assert block_seconds_for(history, 10) == 10


def test_seconds_without_traffic_do_not_count_towards_the_half_hour() -> None:
    history = [Counts(0, 0)] * SWING_SECONDS + stable(MIN_SWING_SECONDS - 1, swinging(60))
    assert block_seconds_for(history, 10) == 10


def test_only_the_last_hour_is_read() -> None:
    history = stable(SWING_SECONDS, swinging(60)) + stable(SWING_SECONDS, steady, seed=2)
    assert block_seconds_for(history, 10) == 10


def test_a_detector_primed_with_slow_swings_judges_in_minute_blocks() -> None:
    detector = Detector()
    swings = stable(SWING_SECONDS, swinging(60))
    detector.prime(swings[-600:], swings=swings)
    assert detector.config.block_seconds == SLOW_BLOCK_SECONDS


def test_minute_blocks_chosen_for_slow_swings_temper_the_canary_s_first_second_more() -> None:
    swings = stable(SWING_SECONDS, swinging(60))
    chosen, fixed = Detector(), Detector(DetectorConfig(choose_block=False))
    for detector in (chosen, fixed):
        detector.prime(swings[-600:], swings=swings)
        detector.update(0, Counts(900, 9), Counts(100, 1))
    assert chosen.errors.dispersion > 2 * fixed.errors.dispersion


def test_a_configured_block_is_kept_whatever_stable_did() -> None:
    detector = Detector(DetectorConfig(block_seconds=20, choose_block=False))
    swings = stable(SWING_SECONDS, swinging(60))
    detector.prime(swings[-600:], swings=swings)
    assert detector.config.block_seconds == 20


def test_the_chosen_block_survives_a_checkpoint() -> None:
    detector = Detector()
    swings = stable(SWING_SECONDS, swinging(60))
    detector.prime(swings[-600:], swings=swings)
    assert Detector.from_checkpoint(detector.checkpoint()).config.block_seconds == 60


def test_a_judge_with_the_block_unset_reads_the_last_hour_before_the_start() -> None:
    assert history_span(RollbackConfig()) == SWING_SECONDS
    assert history_span(RollbackConfig(dispersion_block_seconds=10)) == 600
    assert history_span(RollbackConfig(history_seconds=0)) == 0


def test_a_judge_with_the_block_unset_chooses_it_from_stable_s_last_hour() -> None:
    judge = Judge(RollbackConfig(), started_at=0)
    before = [
        SecondStats(requests=c.requests, errors=c.errors)
        for c in stable(judge.history_span, swinging(60))
    ]
    judge.prime(before)
    assert judge.detector.config.block_seconds == SLOW_BLOCK_SECONDS


def test_a_judge_with_the_block_set_keeps_it() -> None:
    judge = Judge(RollbackConfig(dispersion_block_seconds=10, history_seconds=3600), started_at=0)
    before = [
        SecondStats(requests=c.requests, errors=c.errors)
        for c in stable(judge.history_span, swinging(60))
    ]
    judge.prime(before)
    assert judge.detector.config.block_seconds == 10


def test_with_minute_blocks_chosen_the_drift_is_learnt_from_the_whole_hour() -> None:
    swings = stable(SWING_SECONDS, swinging(60))
    detector = Detector()
    detector.prime(swings[-600:], swings=swings)
    drift, _, pairs = detector.errors.checkpoint()["_lag1"]
    assert pairs == SWING_SECONDS // SLOW_BLOCK_SECONDS - 1  # not the 9 of ten minutes
    assert drift > 0


def test_with_ten_second_blocks_the_drift_is_learnt_from_the_history_alone() -> None:
    swings = stable(SWING_SECONDS, steady)
    detector = Detector()
    detector.prime(swings[-600:], swings=swings)
    assert detector.errors.checkpoint()["_lag1"][2] == 600 // 10 - 1
