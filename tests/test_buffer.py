"""The SDK's outcome buffer: what a recorded outcome becomes, and when a cell is sent."""

from __future__ import annotations

from typing import Any

import pytest

from canaryguard.client._buffer import OutcomeBuffer
from canaryguard.domain.assignment import Variant
from canaryguard.domain.observation_batch import MAX_LATENCY


def at(second: float) -> OutcomeBuffer:
    return OutcomeBuffer(now=lambda: second)


@pytest.mark.parametrize("latency", [float("nan"), float("-inf"), None, "12", object()])
def test_a_latency_that_is_not_a_number_counts_the_request_with_latency_zero(
    latency: Any,
) -> None:
    buffer = at(1_000_000.5)
    buffer.add("d", 1, Variant.CANARY, ok=False, latency_ms=latency)
    [cell] = buffer.drain(everything=True)
    assert (cell["requests"], cell["errors"], cell["latency_sum_ms"], cell["histogram"]) == (
        1,
        1,
        0.0,
        {"0": 1},
    )


def test_an_infinite_latency_is_clamped_to_the_servers_bound() -> None:
    buffer = at(1_000_000.5)
    buffer.add("d", 1, Variant.CANARY, ok=True, latency_ms=float("inf"))
    [cell] = buffer.drain(everything=True)
    assert (cell["requests"], cell["latency_max_ms"]) == (1, MAX_LATENCY)


def test_huge_latencies_never_push_a_cells_sum_past_the_servers_bound() -> None:
    buffer = at(1_000_000.5)
    for _ in range(2):
        buffer.add("d", 1, Variant.CANARY, ok=True, latency_ms=1e308)
    [cell] = buffer.drain(everything=True)
    assert (cell["requests"], cell["latency_sum_ms"]) == (2, MAX_LATENCY)


def test_a_wall_clock_stepped_back_does_not_hold_the_cells_recorded_before_it() -> None:
    clock = [1_000_000.5]
    buffer = OutcomeBuffer(now=lambda: clock[0])
    buffer.add("d", 1, Variant.CANARY, ok=False, latency_ms=5)
    clock[0] -= 3600  # NTP steps the clock back an hour
    buffer.add("d", 1, Variant.CANARY, ok=True, latency_ms=5)
    assert [cell["second"] for cell in buffer.drain()] == [1_000_000]


def test_the_current_second_stays_open_until_it_has_passed() -> None:
    clock = [1_000_000.5]
    buffer = OutcomeBuffer(now=lambda: clock[0])
    buffer.add("d", 1, Variant.CANARY, ok=True, latency_ms=5)
    held = buffer.drain()
    clock[0] += 1
    assert (held, [cell["second"] for cell in buffer.drain()]) == ([], [1_000_000])
