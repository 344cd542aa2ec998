"""The compact observation batch: a binary, columnar encoding of many observations.

The JSON batch (``{"batch_id", "observations": [...]}``) costs the server about 5 us per entry to
parse and validate; this one costs well under 1 us, which is what lets one core take hundreds
of thousands of observations a second. The SDK sends it (``Content-Type:
application/vnd.canaryguard.observations``); any client may keep sending JSON. Standard library
only: the client SDK encodes with it, the server decodes with it.

Layout (all integers little-endian; ``n`` rows, ``p`` histogram pairs)::

    magic        4 bytes   b"CGOB"
    version      u8        1
    batch_id     u8 length + ASCII (length 0: no batch id)
    names        u16 count, then per name: u16 length + UTF-8 (the deployments)
    n, p         u32, u32
    deployment   u16[n]    index into names
    variant      u8[n]     0 stable, 1 canary
    pairs        u8[n]     histogram pairs of the row (its non-empty buckets)
    revision     i64[n]    0: the client did not name one
    second       i64[n]    Unix time, whole seconds
    requests     u32[n]
    errors       u32[n]
    latency_sum  f64[n]    milliseconds
    latency_max  f64[n]    milliseconds
    buckets      u8[p]     the rows' histogram buckets, row after row
    counts       u32[p]    their counts

Every column is checked as a whole (C loops over arrays, not Python loops per entry); only when
a check fails is the first bad row looked for, to name it.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import gt, ne
from typing import Any

from canaryguard.domain.histogram import MAX_BUCKET

__all__ = [
    "CONTENT_TYPE",
    "BatchFormatError",
    "ObservationColumns",
    "decode",
    "encode",
]

CONTENT_TYPE = "application/vnd.canaryguard.observations"
MAGIC = b"CGOB"
VERSION = 1
# seconds are below 2**40 (the JSON model's bound); requests, errors and bucket counts of one
# client's second fit 32 bits (the JSON model allows 10**12: 8 bytes each would make the body
# a third larger, and inflating it is a good part of the server's cost)
MAX_SECOND = 2**40 - 1
MAX_REVISION = 2**62
MAX_LATENCY = 1e18  # milliseconds, as the JSON model: sums of many stay far from overflowing
_U32 = next(code for code in "ILH" if array(code).itemsize == 4)
MAX_NAME = 256
VARIANTS = ("stable", "canary")
_BIG_ENDIAN = sys.byteorder == "big"
# (column, array type code) in body order; the first three per row, then the per-pair two
_ROW_COLUMNS = (
    ("deployment", "H"),
    ("variant", "B"),
    ("pairs", "B"),
    ("revision", "q"),
    ("second", "q"),
    ("requests", _U32),
    ("errors", _U32),
    ("latency_sum", "d"),
    ("latency_max", "d"),
)
_PAIR_COLUMNS = (("buckets", "B"), ("counts", _U32))


class BatchFormatError(ValueError):
    """The body is not a valid compact batch; the message says where and why."""


@dataclass(slots=True)
class ObservationColumns:
    """A decoded batch: one array per field, row ``i`` across all of them."""

    batch_id: str | None
    names: list[str]
    deployment: array[int]
    variant: array[int]
    pairs: array[int]
    revision: array[int]
    second: array[int]
    requests: array[int]
    errors: array[int]
    latency_sum: array[float]
    latency_max: array[float]
    buckets: array[int]
    counts: array[int]

    def __len__(self) -> int:
        return len(self.deployment)


def encode(observations: Iterable[Mapping[str, Any]], *, batch_id: str | None = None) -> bytes:
    """Observations as the SDK drains them (the JSON batch's entries: ``deployment``,
    ``variant``, ``second``, ``revision``, ``requests``, ``errors``, ``latency_sum_ms``,
    ``latency_max_ms``, ``histogram`` with string or integer keys) as one compact batch."""
    names: dict[str, int] = {}
    rows: dict[str, array[Any]] = {name: array(code) for name, code in _ROW_COLUMNS}
    pairs: dict[str, array[Any]] = {name: array(code) for name, code in _PAIR_COLUMNS}
    for number, o in enumerate(observations):
        histogram = o.get("histogram") or {}
        try:
            rows["deployment"].append(names.setdefault(o["deployment"], len(names)))
            rows["variant"].append(VARIANTS.index(str(o["variant"])))
            rows["pairs"].append(len(histogram))
            rows["revision"].append(o.get("revision") or 0)
            rows["second"].append(o["second"])
            rows["requests"].append(o["requests"])
            rows["errors"].append(o["errors"])
            rows["latency_sum"].append(o.get("latency_sum_ms", 0.0))
            rows["latency_max"].append(o.get("latency_max_ms", 0.0))
            for bucket, count in histogram.items():
                pairs["buckets"].append(int(bucket))
                pairs["counts"].append(count)
        except OverflowError as exc:
            raise ValueError(
                f"observation {number} has a value the compact batch cannot hold ({exc}): "
                "send it as JSON"
            ) from exc
    identity = (batch_id or "").encode("ascii")
    head = [MAGIC, struct.pack("<BB", VERSION, len(identity)), identity]
    head.append(struct.pack("<H", len(names)))
    for name in names:
        encoded = name.encode()
        head.append(struct.pack("<H", len(encoded)) + encoded)
    head.append(struct.pack("<II", len(rows["deployment"]), len(pairs["buckets"])))
    for column in (*rows.values(), *pairs.values()):
        if _BIG_ENDIAN:
            column.byteswap()
        head.append(column.tobytes())
    return b"".join(head)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.at = 0

    def take(self, size: int, what: str) -> memoryview:
        if self.at + size > len(self.view):
            raise BatchFormatError(
                f"the batch ends early: {what} needs {size} bytes at byte {self.at}, "
                f"{len(self.view) - self.at} are left"
            )
        chunk = self.view[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def column(self, code: str, length: int, what: str) -> tuple[array[Any], bytes]:
        """The column as an array, and its little-endian bytes (for checks done in C)."""
        column = array(code)
        raw = bytes(self.take(column.itemsize * length, what))
        column.frombytes(raw)
        if _BIG_ENDIAN:
            column.byteswap()
        return column, raw


def decode(data: bytes, *, max_rows: int) -> ObservationColumns:
    """Parse and check a compact batch; ``BatchFormatError`` names the first problem."""
    reader = _Reader(data)
    if bytes(reader.take(4, "the magic number")) != MAGIC:
        raise BatchFormatError("not a compact observation batch (it must start with b'CGOB')")
    version, id_length = reader.unpack("<BB", "the header")
    if version != VERSION:
        raise BatchFormatError(f"batch format version {version} is not supported (only 1)")
    batch_id = _text(reader.take(id_length, "the batch id"), "batch_id", ascii_only=True)
    (name_count,) = reader.unpack("<H", "the number of names")
    names = []
    for index in range(name_count):
        (length,) = reader.unpack("<H", f"the length of name {index}")
        name = _text(reader.take(length, f"name {index}"), f"name {index}", ascii_only=False)
        if not 1 <= len(name) <= MAX_NAME:
            raise BatchFormatError(f"name {index}: a deployment name has 1-{MAX_NAME} characters")
        names.append(name)
    rows, pair_count = reader.unpack("<II", "the row and pair counts")
    if rows > max_rows:
        raise BatchFormatError(f"a batch holds at most {max_rows} observations, got {rows}")
    columns: dict[str, Any] = {}
    raw: dict[str, bytes] = {}
    for layout, length in ((_ROW_COLUMNS, rows), (_PAIR_COLUMNS, pair_count)):
        for name, code in layout:
            columns[name], raw[name] = reader.column(code, length, f"column {name}")
    if reader.at != len(data):
        raise BatchFormatError(
            f"{len(data) - reader.at} bytes follow the last column: the counts do not match"
        )
    batch = ObservationColumns(batch_id=batch_id or None, names=names, **columns)
    _check(batch, raw, pair_count)
    return batch


def _text(raw: memoryview, what: str, *, ascii_only: bool) -> str:
    try:
        return bytes(raw).decode("ascii" if ascii_only else "utf-8")
    except UnicodeDecodeError as exc:
        kind = "ASCII" if ascii_only else "UTF-8"
        raise BatchFormatError(f"{what} is not {kind}") from exc


def _first(flags: Iterable[object]) -> int:
    """The index of the first true flag (the caller knows there is one)."""
    return next(index for index, flag in enumerate(flags) if flag)


def _small(raw: bytes, *, limit_bits: int) -> bool:
    """Whether every 8-byte little-endian integer in ``raw`` is in ``0 .. 2**limit_bits - 1``
    (``limit_bits`` a multiple of 8): its upper bytes are all zero. Checked on the bytes, in C,
    because ``max`` over an array turns each element into a Python int first."""
    return all(raw[i::8].count(0) * 8 == len(raw) for i in range(limit_bits // 8, 8))


def _bytes_within(raw: bytes, high: int) -> bool:
    """Whether every byte of ``raw`` is at most ``high``."""
    return not raw.translate(None, bytes(range(high + 1)))


def _refuse_range(batch: ObservationColumns, column: str, low: float, high: float) -> None:
    """Refuse the first value of ``column`` outside ``low..high`` (called when a quick check
    on the bytes failed, which may be a near miss: 2**62 itself is a valid revision)."""
    values = getattr(batch, column)
    for index, value in enumerate(values):
        if not low <= value <= high:
            raise BatchFormatError(f"observation {index}: {column} {value} is not in {low}..{high}")


def _check(batch: ObservationColumns, raw: Mapping[str, bytes], pair_count: int) -> None:
    rows = len(batch)
    if rows == 0:
        if pair_count:
            raise BatchFormatError(
                f"the batch has no observations but {pair_count} histogram pairs"
            )
        return
    if not batch.names:
        raise BatchFormatError(f"the batch has {rows} observations but no deployment names")
    if max(batch.deployment) >= len(batch.names):
        _refuse_range(batch, "deployment", 0, len(batch.names) - 1)
    if not _bytes_within(raw["variant"], 1):
        _refuse_range(batch, "variant", 0, 1)
    if not _bytes_within(raw["pairs"], MAX_BUCKET + 1):
        _refuse_range(batch, "pairs", 0, MAX_BUCKET + 1)
    # the top byte of a revision below 2**62 is below 0x40
    if not _bytes_within(raw["revision"][7::8], 0x3F):
        _refuse_range(batch, "revision", 0, MAX_REVISION)
    if not _small(raw["second"], limit_bits=40):
        _refuse_range(batch, "second", 0, MAX_SECOND)
    if any(map(gt, batch.errors, batch.requests)):
        bad = _first(map(gt, batch.errors, batch.requests))
        raise BatchFormatError(
            f"observation {bad}: errors ({batch.errors[bad]}) exceed requests "
            f"({batch.requests[bad]})"
        )
    for column in ("latency_sum", "latency_max"):
        values = getattr(batch, column)
        if not all(map(math.isfinite, values)) or min(values) < 0 or max(values) > MAX_LATENCY:
            bad = _first(not (math.isfinite(v) and 0 <= v <= MAX_LATENCY) for v in values)
            raise BatchFormatError(
                f"observation {bad}: {column}_ms must be a finite number from 0 to "
                f"{MAX_LATENCY:g}, got {values[bad]}"
            )
    _check_histograms(batch, raw, pair_count)


def _check_histograms(batch: ObservationColumns, raw: Mapping[str, bytes], pair_count: int) -> None:
    if sum(batch.pairs) != pair_count:
        raise BatchFormatError(
            f"the rows name {sum(batch.pairs)} histogram pairs, the batch holds {pair_count}"
        )
    if pair_count == 0:
        return
    if not _bytes_within(raw["buckets"], MAX_BUCKET):
        bad = _first(bucket > MAX_BUCKET for bucket in batch.buckets)
        raise BatchFormatError(
            f"histogram pair {bad}: bucket {batch.buckets[bad]} is above {MAX_BUCKET}"
        )
    # each row's counts must add up to its requests (rows without a histogram excepted)
    # sum() over list slices: about half the cost of a running total (accumulate) per pair
    counts = batch.counts.tolist()
    sums = []
    start = 0
    for pairs in batch.pairs:
        end = start + pairs
        sums.append(sum(counts[start:end]))
        start = end
    wrong = list(map(ne, sums, batch.requests))
    if any(compress(wrong, batch.pairs)):
        bad = _first(w and p for w, p in zip(wrong, batch.pairs, strict=True))
        raise BatchFormatError(
            f"observation {bad}: histogram counts add up to {sums[bad]}, "
            f"not to requests ({batch.requests[bad]})"
        )
