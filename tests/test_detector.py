"""The anytime-valid detector: known answers, the both-sides incident, dispersion, warm-up."""

from __future__ import annotations

import math
import random

import pytest

from canaryguard.domain.detector import (
    RATIOS,
    Counts,
    Detector,
    DetectorConfig,
    SequentialTest,
    VerdictKind,
)


def feed(detector: Detector, seconds: int, *, canary_rate: float, stable_rate: float = 0.01,
         seed: int = 1, both: float = 1.0) -> int | None:  # fmt: skip
    """Seeded traffic: 900 stable and 100 canary requests a second; the second of the first
    regression verdict, or None."""
    rng = random.Random(seed)
    for second in range(seconds):
        stable = sum(rng.random() < stable_rate * both for _ in range(900))
        canary = sum(rng.random() < canary_rate * both for _ in range(100))
        verdict = detector.update(second, Counts(900, stable), Counts(100, canary))
        if verdict.kind is VerdictKind.REGRESSION:
            return second
    return None


def test_one_second_likelihood_ratio_has_the_closed_form() -> None:
    test = SequentialTest("errors", 0.01, DetectorConfig())
    phi = test.dispersion  # the prior's bound, before any block closed
    test.update(3, 7, 100, 900)  # 3 of 10 errors from a 10 % share
    expected = sum(
        w * (r**3 / (1 + 0.1 * (r - 1)) ** 10) ** (1 / phi)
        for r, w in zip(RATIOS, (0.03, 0.05, 0.13, 0.18, 0.18, 0.15, 0.1, 0.07, 0.05, 0.03, 0.03), strict=True)
    )  # fmt: skip
    assert test.e_value == pytest.approx(expected)


def test_events_in_proportion_to_traffic_are_no_evidence() -> None:
    test = SequentialTest("errors", 0.01, DetectorConfig())
    for _ in range(100):
        test.update(1, 9, 100, 900)
    assert test.e_value < 1


def test_a_second_without_events_or_without_one_side_changes_nothing() -> None:
    test = SequentialTest("errors", 0.01, DetectorConfig())
    assert test.dispersion >= 1
    test.update(0, 0, 100, 900)
    test.update(5, 0, 100, 0)
    assert test.e_value == pytest.approx(1.0)


def test_doubled_canary_errors_are_detected() -> None:
    assert feed(Detector(), 600, canary_rate=0.02) is not None


def test_equal_error_rates_are_not_a_regression() -> None:
    assert feed(Detector(), 600, canary_rate=0.01) is None


def test_an_incident_on_both_sides_cancels_out() -> None:
    assert feed(Detector(), 300, canary_rate=0.01, both=8.0) is None


def test_a_better_canary_is_never_a_regression() -> None:
    assert feed(Detector(), 600, canary_rate=0.002) is None


def test_warm_up_seconds_are_not_evidence() -> None:
    detector = Detector(DetectorConfig(warmup_seconds=1_000))
    assert feed(detector, 300, canary_rate=0.05) is None
    assert detector.errors.canary_requests == 0


def test_a_regression_verdict_stays_and_explains_itself() -> None:
    detector = Detector()
    second = feed(detector, 600, canary_rate=0.03)
    assert second is not None
    verdict = detector.update(second + 1, Counts(900, 0), Counts(100, 0))
    assert verdict.kind is VerdictKind.REGRESSION
    assert verdict.condition == "errors"
    assert "canary errors" in verdict.reason
    assert "e-value" in verdict.reason


def test_slower_canary_latency_is_detected_by_a_latency_test() -> None:
    detector = Detector()
    rng = random.Random(3)
    found = None
    for second in range(300):
        stable: dict[int, int] = {}
        canary: dict[int, int] = {}
        for histogram, n, scale in ((stable, 900, 1.0), (canary, 100, 1.5)):
            for _ in range(n):
                bucket = int(
                    math.log(rng.lognormvariate(math.log(100), 0.3) * scale) / math.log(1.1)
                )
                histogram[bucket] = histogram.get(bucket, 0) + 1
        verdict = detector.update(second, Counts(900, 0, stable), Counts(100, 0, canary))
        if verdict.kind is VerdictKind.REGRESSION:
            found = verdict
            break
    assert found is not None
    assert found.condition.startswith("latency_p")
    assert "slower than stable" in found.reason


def test_over_dispersion_raises_the_dispersion_estimate() -> None:
    test = SequentialTest("errors", 0.01, DetectorConfig())
    rng = random.Random(5)
    for block in range(60):
        boost = 3 if block % 2 else 0  # the canary's count swings block by block
        for _ in range(10):
            test.update(1 + boost if rng.random() < 0.5 else 0, 9, 100, 900)
    assert test.dispersion > 1.5


def test_error_rates_drifting_on_both_sides_raise_the_dispersion() -> None:
    test = SequentialTest("errors", 0.01, DetectorConfig())
    rng = random.Random(7)
    for _ in range(30):
        stable_rate = 0.01 * rng.choice((0.5, 1.5))  # each side's rate jumps block by block
        canary_rate = 0.01 * rng.choice((0.5, 1.5))
        for _ in range(10):
            stable = sum(rng.random() < stable_rate for _ in range(900))
            canary = sum(rng.random() < canary_rate for _ in range(100))
            test.update(canary, stable, 100, 900)
    assert test.dispersion > 3


def test_steady_traffic_brings_the_dispersion_down_from_the_prior() -> None:
    config = DetectorConfig()
    test = SequentialTest("errors", 0.01, config)
    assert test.dispersion == pytest.approx(config.prior_dispersion)
    rng = random.Random(8)
    for _ in range(300):
        stable = sum(rng.random() < 0.01 for _ in range(900))
        canary = sum(rng.random() < 0.01 for _ in range(100))
        test.update(canary, stable, 100, 900)
    assert test.dispersion < 1.3


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DetectorConfig(alpha=0)
    with pytest.raises(ValueError, match="latency quantiles"):
        DetectorConfig(latency_quantiles=(1.5,))


def stable_history(
    seconds: int, *, rates: tuple[float, ...] = (0.01,), seed: int = 2
) -> list[Counts]:
    """Stable alone before the canary: 1,000 requests a second, its error rate cycling through
    ``rates`` block by block (10 s each); a latency histogram of 1,000 requests at 50 ms."""
    rng = random.Random(seed)
    return [
        Counts(1000, sum(rng.random() < rates[(s // 10) % len(rates)] for _ in range(1000)), {41: 1000})
        for s in range(seconds)
    ]  # fmt: skip


def test_a_steady_stable_history_lets_the_first_seconds_count_nearly_in_full() -> None:
    detector = Detector()
    detector.prime(stable_history(300))
    feed(detector, 3, canary_rate=0.01)
    assert detector.errors.dispersion < 1.2  # without history: the prior, 2.1


def test_a_wobbling_stable_history_tempers_the_canary_s_very_first_second() -> None:
    detector = Detector()
    detector.prime(stable_history(300, rates=(0.005, 0.015)))
    detector.update(0, Counts(900, 9), Counts(100, 1))
    assert detector.errors.dispersion > 3


def test_longer_dispersion_blocks_see_a_swing_that_lasts_a_minute() -> None:
    history = stable_history(600, rates=(0.005,) * 6 + (0.015,) * 6)  # a minute low, one high
    short, long = Detector(), Detector(DetectorConfig(block_seconds=60))
    for detector in (short, long):
        detector.prime(history)
        detector.update(0, Counts(900, 9), Counts(100, 1))
    assert long.errors.dispersion > 2 * short.errors.dispersion


def test_a_steady_stable_history_gets_a_doubled_canary_caught_sooner() -> None:
    cold, primed = Detector(), Detector()
    primed.prime(stable_history(300))
    without = feed(cold, 600, canary_rate=0.02, seed=4)
    with_history = feed(primed, 600, canary_rate=0.02, seed=4)
    assert without is not None
    assert with_history is not None
    assert with_history < without


def test_history_is_no_evidence_against_the_canary() -> None:
    detector = Detector()
    detector.prime(stable_history(300, rates=(0.05,)))
    assert detector.errors.e_value == pytest.approx(1.0)
    assert detector.errors.canary_requests == 0
    assert detector.current().kind is VerdictKind.INCONCLUSIVE


def test_history_sets_the_latency_thresholds_so_latency_is_judged_from_the_first_second() -> None:
    primed, cold = Detector(), Detector()
    primed.prime(stable_history(60))
    for detector in (primed, cold):
        detector.update(0, Counts(900, 9, {41: 900}), Counts(100, 1, {41: 100}))
    assert primed.latency[0].canary_requests == 100
    assert cold.latency[0].canary_requests == 0  # its thresholds need stable's data first


def test_history_after_the_canary_s_first_second_is_refused() -> None:
    detector = Detector()
    detector.update(0, Counts(900, 9), Counts(100, 1))
    with pytest.raises(RuntimeError, match="history comes before"):
        detector.prime(stable_history(10))


def test_history_given_twice_is_refused() -> None:
    detector = Detector()
    detector.prime(stable_history(30))
    with pytest.raises(RuntimeError, match="given already"):
        detector.prime(stable_history(30))
