"""The window store and the rolling evaluation window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from canaryguard.domain.assignment import Variant
from canaryguard.domain.windows import RollingWindow, SecondStats, WindowStore

seconds_data = st.lists(
    st.tuples(
        st.integers(0, 50),  # requests
        st.integers(0, 5),  # errors (capped below)
        st.floats(0, 1000),  # max latency
        st.dictionaries(st.integers(0, 60), st.integers(1, 5), max_size=4),
    ),
    min_size=1,
    max_size=40,
)


@given(seconds_data, st.integers(1, 15))
def test_the_rolling_window_equals_the_sum_over_its_last_seconds(
    data: list[tuple[int, int, float, dict[int, int]]], size: int
) -> None:
    window = RollingWindow(size)
    for second, (requests, errors, latency_max, histogram) in enumerate(data):
        stats = SecondStats(
            requests, min(errors, requests), float(requests), latency_max, histogram
        )
        window.push(second, {Variant.CANARY: stats})
    last = data[-size:]
    totals = window.totals()[Variant.CANARY]
    assert totals.requests == sum(d[0] for d in last)
    assert totals.errors == sum(min(d[1], d[0]) for d in last)
    assert totals.latency_max_ms == max(d[2] for d in last)
    merged: dict[int, int] = {}
    for *_, histogram in last:
        for bucket, count in histogram.items():
            merged[bucket] = merged.get(bucket, 0) + count
    assert window.sums[Variant.CANARY].histogram == merged


def test_the_store_keeps_revisions_apart_and_filters_old_ones() -> None:
    store = WindowStore()
    for revision, requests in ((3, 10), (4, 5), (0, 1)):
        store.add(
            ("d", revision, Variant.CANARY, 100),
            requests=requests,
            errors=0,
            latency_sum_ms=0.0,
            latency_max_ms=0.0,
            histogram={},
        )
    assert store.second("d", 100)[Variant.CANARY].requests == 16
    # revision 0 (not named by the client) always counts
    assert store.second("d", 100, min_revision=4)[Variant.CANARY].requests == 6


def test_unflushed_deltas_are_taken_once_and_stay_readable() -> None:
    store = WindowStore()
    key = ("d", 1, Variant.STABLE, 7)
    store.add(key, requests=2, errors=1, latency_sum_ms=3.0, latency_max_ms=2.0, histogram={1: 2})
    taken = store.take_unflushed()
    assert taken[key].requests == 2
    assert store.take_unflushed() == {}
    assert store.unflushed == 0
    assert store.totals("d", since=0, until=10)[Variant.STABLE].requests == 2


def test_pruning_drops_old_seconds() -> None:
    store = WindowStore()
    for second in (10, 20):
        store.add(
            ("d", 1, Variant.STABLE, second),
            requests=1,
            errors=0,
            latency_sum_ms=0.0,
            latency_max_ms=0.0,
            histogram={},
        )
    store.prune(15)
    assert store.totals("d", since=0, until=30)[Variant.STABLE].requests == 1
