"""The detector on counts that come lumped, every scrape interval, or with gaps: its blocks are
wall seconds, so they keep time with how fast the rates move however the counts arrive."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from canaryguard.domain.detector import (
    MAX_READ_GAP_SECONDS,
    MIN_SWING_SECONDS,
    SLOW_BLOCK_SECONDS,
    SWING_RATIO,
    SWING_RATIO_SPARSE,
    SWING_SECONDS,
    Counts,
    Detector,
    block_seconds_for,
    observed_seconds,
    read_cadence,
    swing_ratio,
)


def stable(
    seconds: int, rates: Sequence[float], *, period: int = 10, seed: int = 1, phase: int = 0
) -> list[Counts]:
    """Stable alone, 1,000 requests a second, its error rate cycling through ``rates``, one
    ``period`` each (the first one ``period - phase`` seconds long)."""
    rng = random.Random(seed)
    return [
        Counts(
            1000,
            sum(rng.random() < rates[((s + phase) // period) % len(rates)] for _ in range(1000)),
        )
        for s in range(seconds)
    ]


def swinging(seconds: int, period: int, *, seed: int = 1, phase: int = 0) -> list[Counts]:
    """Stable alone, 1,000 requests a second at 1 % errors times a factor (mean 1, CV 0.3) drawn
    anew every ``period`` seconds (the first ``period - phase`` seconds long)."""
    rng = random.Random(seed)
    factors = [rng.gammavariate(1 / 0.09, 0.09) for _ in range(seconds // period + 2)]
    return stable(seconds, [0.01 * f for f in factors], period=period, seed=seed, phase=phase)


def scraped(seconds: Sequence[Counts], interval: int) -> list[Counts]:
    """``seconds`` as a scrape every ``interval`` seconds sees them: each interval's counts in
    its last second, the seconds between empty."""
    out: list[Counts] = []
    requests = errors = 0
    histogram: Counter[int] = Counter()
    for second, counts in enumerate(seconds):
        requests += counts.requests
        errors += counts.errors
        histogram.update(counts.histogram)
        if (second + 1) % interval == 0:
            out.append(Counts(requests, errors, dict(histogram)))
            requests = errors = 0
            histogram = Counter()
        else:
            out.append(Counts())
    return out


def with_gaps(seconds: Sequence[Counts], *, every: int, length: int) -> list[Counts]:
    """``seconds`` with no data for the first ``length`` seconds of every ``every``."""
    return [Counts() if s % every < length else c for s, c in enumerate(seconds)]


def first_second_dispersion(history: Sequence[Counts]) -> float:
    detector = Detector()
    detector.prime(history)
    detector.update(0, Counts(900, 9), Counts(100, 1))
    return detector.errors.dispersion


def test_a_wobble_every_ten_seconds_is_seen_through_scrapes_five_seconds_apart() -> None:
    wobbling = stable(600, (0.005, 0.015))
    every_second = first_second_dispersion(wobbling)
    assert every_second > 3
    assert first_second_dispersion(scraped(wobbling, 5)) > 0.8 * every_second


def slow_wobble(seconds: int) -> list[Counts]:
    """Stable alone, 1,000 requests a second, 5 % or 15 % of them slow, ten seconds each."""
    rng = random.Random(3)
    out = []
    for second in range(seconds):
        slow = sum(rng.random() < (0.05, 0.15)[(second // 10) % 2] for _ in range(1000))
        out.append(Counts(1000, 10, {41: 1000 - slow, 60: slow}))
    return out


def first_second_latency_dispersion(history: Sequence[Counts]) -> float:
    detector = Detector()
    detector.prime(history)
    detector.update(0, Counts(900, 9, {41: 810, 60: 90}), Counts(100, 1, {41: 90, 60: 10}))
    return detector.latency[0].dispersion


def test_a_latency_wobble_every_ten_seconds_is_seen_through_scrapes_five_seconds_apart() -> None:
    every_second = first_second_latency_dispersion(slow_wobble(600))
    assert every_second > 3
    assert first_second_latency_dispersion(scraped(slow_wobble(600), 5)) > 0.8 * every_second


def test_a_wobble_every_ten_seconds_is_seen_across_gaps_in_the_data() -> None:
    # half of every block missing: blocks of seconds with traffic would each mix two phases
    # of the wobble and average it away
    assert first_second_dispersion(with_gaps(stable(600, (0.005, 0.015)), every=10, length=5)) > 3


def test_a_steady_fleet_scraped_every_fifteen_seconds_is_tempered_little() -> None:
    assert first_second_dispersion(scraped(stable(600, (0.01,)), 15)) < 1.6


def test_scrapes_fifteen_seconds_apart_show_a_fleet_swinging_every_minute() -> None:
    history = scraped(swinging(SWING_SECONDS, 60), 15)
    assert block_seconds_for(history, 10) == SLOW_BLOCK_SECONDS


def test_scrapes_fifteen_seconds_apart_of_a_steady_fleet_keep_the_ten_second_block() -> None:
    assert block_seconds_for(scraped(stable(SWING_SECONDS, (0.01,)), 15), 10) == 10


def test_scrapes_a_minute_apart_cover_the_seconds_between_them() -> None:
    assert observed_seconds(scraped(stable(1200, (0.01,)), MAX_READ_GAP_SECONDS)) == 1200 - 59


def test_a_gap_longer_than_a_minute_covers_nothing() -> None:
    history = [Counts(1000, 10)] + [Counts()] * MAX_READ_GAP_SECONDS + [Counts(1000, 10)]
    assert observed_seconds(history) == 2


def test_scrapes_thirty_seconds_apart_over_the_last_hour_let_the_block_be_chosen() -> None:
    history = scraped(swinging(SWING_SECONDS, 60), 30)
    assert observed_seconds(history) >= MIN_SWING_SECONDS


def test_a_canary_silent_at_first_is_tempered_as_one_with_traffic_from_the_start() -> None:
    # seconds with stable's counts alone are seconds of counts, not seconds between scrapes:
    # the canary's first counts then stand for one second, not for all the silent ones
    wobbling = stable(600, (0.005, 0.015))
    detector = Detector()
    detector.prime(wobbling)
    for second in range(30):
        detector.update(second, Counts(900, 9), Counts())
    detector.update(30, Counts(900, 9), Counts(100, 1))
    assert detector.errors.dispersion > 0.8 * first_second_dispersion(wobbling)


def test_the_read_cadence_of_reports_every_second_is_one_second() -> None:
    assert read_cadence(stable(600, (0.01,))) == 1


def test_the_read_cadence_of_scrapes_is_their_interval() -> None:
    assert read_cadence(scraped(stable(600, (0.01,)), 15)) == 15


def test_minute_swings_must_stand_out_less_through_sparse_reads() -> None:
    assert swing_ratio(1, 10) == swing_ratio(10, 10) == SWING_RATIO
    assert SWING_RATIO_SPARSE < swing_ratio(20, 10) < SWING_RATIO
    assert swing_ratio(30, 10) == swing_ratio(60, 10) == SWING_RATIO_SPARSE


def test_longer_short_blocks_ask_what_reads_as_far_apart_ask() -> None:
    # a short block of 30 s compares what scrapes 30 s apart compare
    assert swing_ratio(1, 30) == swing_ratio(30, 10) == SWING_RATIO_SPARSE
    assert swing_ratio(1, 20) == swing_ratio(20, 10)


def test_scrapes_thirty_seconds_apart_show_a_fleet_swinging_every_minute() -> None:
    # swings out of step with the scrapes: each minute's is seen by two scrapes only partly
    history = scraped(swinging(SWING_SECONDS, 60, phase=13), 30)
    assert block_seconds_for(history, 10) == SLOW_BLOCK_SECONDS


def test_scrapes_thirty_seconds_apart_of_a_fleet_wobbling_every_ten_seconds_keep_ten() -> None:
    history = scraped(swinging(SWING_SECONDS, 10, phase=13), 30)
    assert block_seconds_for(history, 10) == 10


def lumped_canary_dispersions(
    history: Sequence[Counts], interval: int, seconds: int
) -> list[float]:
    """The error test's dispersion at each scrape of a canary at stable's 1 % (900 and 100
    requests a second), scraped every ``interval`` seconds after ``history``."""
    detector = Detector()
    detector.prime(history)
    out = []
    for second in range(seconds):
        if (second + 1) % interval:
            detector.update(second, Counts(), Counts())
            continue
        detector.update(
            second, Counts(900 * interval, 9 * interval), Counts(100 * interval, interval)
        )
        out.append(detector.errors.dispersion)
    return out


def test_a_steady_fleet_s_canary_scraped_every_fifteen_seconds_is_tempered_little() -> None:
    # a scrape's counts stand for its fifteen seconds, not for one second of a block's ten
    assert max(lumped_canary_dispersions(scraped(stable(600, (0.01,)), 15), 15, 60)) < 2


def test_a_wobble_between_thirty_second_scrapes_tempers_the_canary_s_scrapes() -> None:
    # the blocks between two scrapes hold no counts: skipped, not taken for a steady rate
    history = scraped(stable(600, (0.005, 0.015), period=30), 30)
    assert min(lumped_canary_dispersions(history, 30, 90)) > 10


def test_counts_after_a_gap_of_over_a_minute_stand_for_one_second() -> None:
    wobbling = stable(600, (0.005, 0.015))
    detector = Detector()
    detector.prime(wobbling)
    for second in range(2 * MAX_READ_GAP_SECONDS):
        detector.update(second, Counts(), Counts())
    detector.update(2 * MAX_READ_GAP_SECONDS, Counts(900, 9), Counts(100, 1))
    assert detector.errors.dispersion > 0.8 * first_second_dispersion(wobbling)


def test_a_block_the_canary_was_silent_in_for_a_while_counts_as_a_whole_block() -> None:
    # its variance scaled to a whole block's, which the drift's dispersion is computed for
    def dispersion_after_the_first_block(silent: int) -> float:
        detector = Detector()
        detector.prime(stable(600, (0.005, 0.015)))
        for second in range(16):
            canary = Counts() if second < silent else Counts(100, 1)
            detector.update(second, Counts(900, 9), canary)
        return detector.errors.dispersion

    assert dispersion_after_the_first_block(5) > 0.9 * dispersion_after_the_first_block(0)
