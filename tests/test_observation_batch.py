"""The compact observation batch: round trips, equivalence with JSON ingestion, bad bodies."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.domain.assignment import Variant
from canaryguard.domain.histogram import MAX_BUCKET
from canaryguard.domain.models import Observation
from canaryguard.domain.observation_batch import (
    MAX_SECOND,
    BatchFormatError,
    decode,
    encode,
)
from canaryguard.domain.windows import WindowStore

SECOND = 1_800_000_000


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    histogram = draw(
        st.dictionaries(st.integers(0, MAX_BUCKET), st.integers(1, 10**6), min_size=0, max_size=12)
    )
    requests = sum(histogram.values()) if histogram else draw(st.integers(0, 10**6))
    return {
        "deployment": draw(st.sampled_from(["shop/security", "pay/ratelimit", "é/ü"])),
        "variant": draw(st.sampled_from(["stable", "canary"])),
        "second": SECOND + draw(st.integers(0, 30)),
        "revision": draw(st.one_of(st.none(), st.integers(1, 2**62))),
        "requests": requests,
        "errors": draw(st.integers(0, requests)),
        "latency_sum_ms": draw(st.floats(0, 1e9)),
        "latency_max_ms": draw(st.floats(0, 1e6)),
        "histogram": {str(bucket): count for bucket, count in histogram.items()},
    }


def rows_of(data: bytes) -> list[dict[str, Any]]:
    batch = decode(data, max_rows=10_000)
    out, start = [], 0
    for i in range(len(batch)):
        end = start + batch.pairs[i]
        out.append(
            {
                "deployment": batch.names[batch.deployment[i]],
                "variant": ("stable", "canary")[batch.variant[i]],
                "second": batch.second[i],
                "revision": batch.revision[i] or None,
                "requests": batch.requests[i],
                "errors": batch.errors[i],
                "latency_sum_ms": batch.latency_sum[i],
                "latency_max_ms": batch.latency_max[i],
                "histogram": {
                    str(b): c
                    for b, c in zip(batch.buckets[start:end], batch.counts[start:end], strict=True)
                },
            }
        )
        start = end
    return out


@settings(max_examples=200)
@given(st.lists(observations(), max_size=40), st.one_of(st.none(), st.just("b-1_x")))
def test_a_batch_decodes_to_what_was_encoded(
    rows: list[dict[str, Any]], batch_id: str | None
) -> None:
    data = encode(rows, batch_id=batch_id)
    assert rows_of(data) == rows
    assert decode(data, max_rows=10_000).batch_id == batch_id


@settings(max_examples=100)
@given(st.lists(observations(), min_size=1, max_size=40))
def test_a_compact_batch_merges_exactly_like_the_same_json_batch(
    rows: list[dict[str, Any]],
) -> None:
    compact, json_path = WindowStore(), WindowStore()
    compact.add_columns(decode(encode(rows), max_rows=10_000))
    json_path.add_observations([Observation.model_validate(row) for row in rows])
    assert compact.take_unflushed() == json_path.take_unflushed()
    for name in {row["deployment"] for row in rows}:
        assert compact.totals(name, since=SECOND, until=SECOND + 30) == json_path.totals(
            name, since=SECOND, until=SECOND + 30
        )


def good_row(**changes: Any) -> dict[str, Any]:
    row = {
        "deployment": "shop/security",
        "variant": "canary",
        "second": SECOND,
        "revision": 3,
        "requests": 10,
        "errors": 1,
        "latency_sum_ms": 120.0,
        "latency_max_ms": 40.0,
        "histogram": {"25": 10},
    }
    return row | changes


def refused(rows: list[dict[str, Any]]) -> str:
    with pytest.raises(BatchFormatError) as caught:
        decode(encode(rows), max_rows=10_000)
    return str(caught.value)


def test_errors_above_requests_are_refused_naming_the_row() -> None:
    assert refused([good_row(), good_row(errors=11)]) == (
        "observation 1: errors (11) exceed requests (10)"
    )


def test_a_histogram_that_does_not_add_up_is_refused_naming_the_row() -> None:
    message = refused([good_row(), good_row(), good_row(histogram={"25": 4, "30": 5})])
    assert message == "observation 2: histogram counts add up to 9, not to requests (10)"


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 1e308])
def test_a_latency_that_is_not_a_finite_number_in_range_is_refused(value: float) -> None:
    message = refused([good_row(), good_row(latency_sum_ms=value)])
    assert message.startswith("observation 1: latency_sum_ms must be a finite number from 0 to")


def test_latencies_whose_sum_would_overflow_are_refused_not_crashed_on() -> None:
    message = refused([good_row(latency_max_ms=1e308), good_row(latency_max_ms=1e308)])
    assert message.startswith("observation 0: latency_max_ms must be a finite number from 0 to")


def test_a_bucket_named_twice_in_a_row_adds_up_on_every_path() -> None:
    data = bytearray(encode([good_row(histogram={"5": 4, "6": 6})]))
    data[len(data) - 2 * 4 - 1] = 5  # the second bucket (u8, before two u32 counts) -> 5
    batch = decode(bytes(data), max_rows=10)
    fresh, existing = WindowStore(), WindowStore()
    existing.add_columns(decode(encode([good_row(histogram={"5": 10})]), max_rows=10))
    fresh.add_columns(batch)
    existing.add_columns(batch)
    assert fresh.second("shop/security", SECOND)[Variant.CANARY].histogram == {5: 10}
    assert existing.second("shop/security", SECOND)[Variant.CANARY].histogram == {5: 20}


def test_histogram_pairs_without_observations_are_refused() -> None:
    data = encode([])
    rows_and_pairs = struct.pack("<II", 0, 1)
    with pytest.raises(BatchFormatError, match="no observations but 1 histogram pairs"):
        decode(data[:-8] + rows_and_pairs + b"\x05" + struct.pack("<I", 3), max_rows=10)


def test_a_count_beyond_32_bits_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="observation 1 has a value the compact batch cannot hold"):
        encode([good_row(), good_row(requests=2**32, errors=0, histogram={})])


def test_a_negative_second_is_refused() -> None:
    assert refused([good_row(second=-5)]) == f"observation 0: second -5 is not in 0..{MAX_SECOND}"


def test_a_revision_from_2_to_the_62_on_is_refused() -> None:
    message = refused([good_row(revision=2**62 + 1)])
    assert message.startswith(f"observation 0: revision {2**62 + 1} is not in")


def test_a_bucket_above_the_last_is_refused() -> None:
    message = refused([good_row(histogram={str(MAX_BUCKET + 1): 10})])
    assert message == f"histogram pair 0: bucket {MAX_BUCKET + 1} is above {MAX_BUCKET}"


def patched(data: bytes, offset_from_end: int, value: bytes) -> bytes:
    at = len(data) - offset_from_end
    return data[:at] + value + data[at + len(value) :]


def test_an_unknown_variant_code_is_refused() -> None:
    data = bytearray(encode([good_row()]))
    header = 4 + 2 + 2 + 2 + len(b"shop/security") + 8
    data[header + 2] = 7  # deployment u16, then the variant byte
    with pytest.raises(BatchFormatError, match=r"observation 0: variant 7 is not in 0\.\.1"):
        decode(bytes(data), max_rows=10)


def test_a_deployment_index_past_the_names_is_refused() -> None:
    data = bytearray(encode([good_row()]))
    header = 4 + 2 + 2 + 2 + len(b"shop/security") + 8
    data[header : header + 2] = struct.pack("<H", 1)
    with pytest.raises(BatchFormatError, match=r"observation 0: deployment 1 is not in 0\.\.0"):
        decode(bytes(data), max_rows=10)


def test_a_truncated_batch_is_refused_saying_where_it_ends() -> None:
    data = encode([good_row(), good_row()])
    with pytest.raises(BatchFormatError, match="the batch ends early: column counts"):
        decode(data[:-3], max_rows=10)


def test_bytes_after_the_last_column_are_refused() -> None:
    with pytest.raises(BatchFormatError, match="3 bytes follow the last column"):
        decode(encode([good_row()]) + b"abc", max_rows=10)


def test_a_body_that_is_not_a_compact_batch_is_refused() -> None:
    with pytest.raises(BatchFormatError, match="not a compact observation batch"):
        decode(b'{"observations": []}', max_rows=10)


def test_an_unknown_format_version_is_refused() -> None:
    data = encode([good_row()])
    with pytest.raises(BatchFormatError, match="version 9 is not supported"):
        decode(data[:4] + b"\x09" + data[5:], max_rows=10)


def test_more_rows_than_allowed_are_refused_before_reading_them() -> None:
    with pytest.raises(BatchFormatError, match="at most 2 observations, got 3"):
        decode(encode([good_row()] * 3), max_rows=2)


def test_a_name_that_is_not_utf8_is_refused() -> None:
    data = encode([good_row(deployment="ab")])
    at = data.index(b"ab")
    with pytest.raises(BatchFormatError, match="name 0 is not UTF-8"):
        decode(data[:at] + b"\xff\xfe" + data[at + 2 :], max_rows=10)


def test_pair_counts_that_disagree_with_the_rows_are_refused() -> None:
    data = bytearray(encode([good_row(histogram={"25": 4, "26": 6})]))
    header = 4 + 2 + 2 + 2 + len(b"shop/security") + 8
    data[header + 3] = 1  # the row claims one pair, the batch holds two
    with pytest.raises(BatchFormatError, match="the rows name 1 histogram pairs"):
        decode(bytes(data), max_rows=10)


def test_an_empty_batch_decodes_to_no_rows() -> None:
    batch = decode(encode([]), max_rows=10)
    assert (len(batch), batch.names, batch.batch_id) == (0, [], None)


def test_merged_cells_are_visible_to_reads_before_any_flush() -> None:
    windows = WindowStore()
    windows.add_columns(
        decode(encode([good_row(), good_row(requests=5, errors=0, histogram={})]), max_rows=10)
    )
    both = windows.second("shop/security", SECOND)
    assert (both[Variant.CANARY].requests, both[Variant.CANARY].errors) == (15, 1)
    assert windows.unflushed == 1
