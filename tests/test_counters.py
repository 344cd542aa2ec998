"""Counters' raw samples to per-second outcomes (``domain.counters``): known answers and a
property over any run of increments and restarts."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from canaryguard.domain.counters import (
    MAX_GAP_SECONDS,
    CounterTracker,
    bucket_at_or_above,
    latency_histogram,
    second_stats,
)
from canaryguard.domain.histogram import bucket_upper_ms, quantile
from canaryguard.domain.models import VariantMetrics

KEY = (("__name__", "requests_total"), ("variant", "canary"))


def test_a_series_first_sample_only_sets_where_counting_starts() -> None:
    tracker = CounterTracker()
    increments = tracker.increments(KEY, [(100.2, 50.0), (101.2, 57.0)], until=200.0)
    assert increments == [(101, 7.0, 100.2)]


def test_samples_up_to_after_only_set_where_counting_starts() -> None:
    tracker = CounterTracker(after=101.5)
    samples = [(100.0, 1.0), (101.0, 4.0), (102.0, 9.0)]
    assert tracker.increments(KEY, samples, until=200.0) == [(102, 5.0, 101.0)]


def test_samples_after_until_are_left_for_the_next_read() -> None:
    tracker = CounterTracker()
    samples = [(100.0, 1.0), (101.0, 4.0), (102.0, 9.0)]
    assert tracker.increments(KEY, samples, until=101.5) == [(101, 3.0, 100.0)]
    assert tracker.increments(KEY, samples, until=200.0) == [(102, 5.0, 101.0)]


def test_samples_seen_in_an_earlier_read_are_not_counted_again() -> None:
    tracker = CounterTracker()
    tracker.increments(KEY, [(100.0, 10.0), (101.0, 12.0)], until=200.0)
    later = tracker.increments(KEY, [(100.0, 10.0), (101.0, 12.0), (102.5, 20.0)], until=200.0)
    assert later == [(102, 8.0, 101.0)]


def test_a_counter_that_goes_down_restarted_and_counts_its_new_value() -> None:
    tracker = CounterTracker()
    increments = tracker.increments(KEY, [(100.0, 90.0), (101.0, 3.0)], until=200.0)
    assert increments == [(101, 3.0, 100.0)]


def test_samples_further_apart_than_the_gap_start_afresh() -> None:
    tracker = CounterTracker()
    samples = [(100.0, 10.0), (100.0 + MAX_GAP_SECONDS + 1, 500.0), (402.0, 501.0)]
    assert tracker.increments(KEY, samples, until=500.0) == [(402, 1.0, 401.0)]


def test_values_that_are_no_counts_are_skipped() -> None:
    tracker = CounterTracker()
    samples = [(100.0, 10.0), (101.0, math.nan), (102.0, -1.0), (103.0, 12.0)]
    assert tracker.increments(KEY, samples, until=200.0) == [(103, 2.0, 100.0)]


def test_series_without_a_recent_sample_are_forgotten() -> None:
    tracker = CounterTracker()
    tracker.increments(KEY, [(100.0, 1.0)], until=200.0)
    other = (("variant", "stable"),)
    tracker.increments(other, [(150.0, 1.0)], until=200.0)
    tracker.prune(before=120.0)
    assert set(tracker.last) == {other}


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 1_000), st.booleans()),  # (increase, restart before it)
        min_size=1,
        max_size=60,
    ),
    reads=st.lists(st.integers(1, 60), max_size=6),
)
def test_every_increase_after_the_first_sample_is_counted_once_however_it_is_read(
    steps: list[tuple[int, bool]], reads: list[int]
) -> None:
    # a counter sampled every second, restarting now and then (a restart shows as a value
    # below the last, so only an increase smaller than the value can follow one: as for
    # Prometheus), read in windows that overlap the previous read, as the adapter reads
    samples: list[tuple[float, float]] = [(1_000.0, 0.0)]
    value, expected = 0, 0
    for i, (increase, restart) in enumerate(steps, start=1):
        value = increase if restart and increase < value else value + increase
        expected += increase
        samples.append((1_000.0 + i, float(value)))
    tracker = CounterTracker()
    counted = 0.0
    cuts = sorted({1, *(min(r, len(samples)) for r in reads), len(samples)})
    start = 0
    for end in cuts:
        window = samples[max(0, start - 3) : end]
        counted += sum(amount for _, amount, _ in tracker.increments(KEY, window, until=1e9))
        start = end
    assert counted == expected


@given(st.floats(min_value=0.01, max_value=1e8))
def test_a_bucket_edge_is_read_at_or_at_most_ten_percent_above_it(upper_ms: float) -> None:
    bucket = bucket_at_or_above(upper_ms)
    assert bucket_upper_ms(bucket) >= min(upper_ms, bucket_upper_ms(200))
    if bucket > 0:
        assert bucket_upper_ms(bucket - 1) < upper_ms


def test_a_prometheus_histogram_becomes_log_buckets_read_at_their_edges() -> None:
    # 10 requests up to 100 ms, 5 more up to 250 ms, 1 above the last edge
    histogram = latency_histogram({100.0: 10.0, 250.0: 15.0, 1_000.0: 15.0, math.inf: 16.0})
    assert sum(histogram.values()) == 16
    assert histogram[bucket_at_or_above(100.0)] == 10
    assert histogram[bucket_at_or_above(250.0)] == 5
    assert histogram[bucket_at_or_above(1_000.0) + 1] == 1
    assert 100.0 <= quantile(histogram, 0.5) < 110.0


def test_a_cumulative_count_below_the_one_before_counts_as_nothing() -> None:
    assert latency_histogram({100.0: 10.0, 250.0: 8.0, math.inf: 12.0}) == {
        bucket_at_or_above(100.0): 10,
        bucket_at_or_above(250.0) + 1: 2,
    }


def test_errors_ahead_of_their_requests_are_kept() -> None:
    stats = second_stats(5.0, 7.0, 40.0, {})
    assert (stats.requests, stats.errors) == (5, 7)


def test_an_error_rate_read_from_errors_ahead_of_requests_is_at_most_one() -> None:
    assert VariantMetrics(requests=5, errors=7).error_rate == 1.0


def test_a_seconds_slowest_request_is_read_as_its_highest_bucket() -> None:
    bucket = bucket_at_or_above(250.0)
    stats = second_stats(3.0, 0.0, 400.0, {bucket: 3})
    assert stats.latency_max_ms == bucket_upper_ms(bucket)


def test_a_second_with_only_the_inf_bucket_is_read_above_the_largest_edge() -> None:
    histogram = latency_histogram({math.inf: 10.0}, largest=1_000.0)
    assert histogram == {bucket_at_or_above(1_000.0) + 1: 10}


def test_a_histogram_without_finite_edges_says_nothing_of_latency() -> None:
    assert latency_histogram({math.inf: 10.0}) == {}
