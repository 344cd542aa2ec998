"""Prometheus as a metrics source: raw samples through its HTTP query API.

For each selector of a deployment (``PrometheusSelectors``) canaryguard asks for the range
vector ``selector[Ns]`` at the current time (``GET /api/v1/query``). Prometheus answers with
every raw sample of every matching series in the last N seconds, and ``domain.counters`` turns
their increases into per-second outcomes per variant. Raw samples, not ``increase()`` or
``rate()``: those extrapolate to the edges of their window and give fractions of requests,
where the detector counts requests and errors.

The first read of a deployment reaches back an hour, the stable history the monitor reads
before a canary (``docs/detection.md``); later ones reach back to a minute before the previous
read, and only samples newer than the last seen of their series count. Samples after the
``until`` the caller gives are left for the next read, so that the scrape they belong to is in
Prometheus whole by then (the caller keeps the monitor from judging seconds not read yet:
``engine.pulling``).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from canaryguard.domain.assignment import Variant
from canaryguard.domain.counters import (
    CounterTracker,
    Increment,
    Sample,
    SeriesKey,
    latency_histogram,
    second_stats,
    seconds_of,
)
from canaryguard.domain.errors import InvalidInput, Unavailable
from canaryguard.domain.models import PrometheusSelectors
from canaryguard.domain.windows import SecondStats

__all__ = ["BACKFILL_SECONDS", "OVERLAP_SECONDS", "PrometheusError", "PrometheusSource"]

BACKFILL_SECONDS = 3_660  # the first read: the hour before a canary the monitor may read
OVERLAP_SECONDS = 60  # later reads reach this far before the previous one (late scrapes)
BACKFILL_TRIES = 3  # first reads of an hour that fail (too many series, too slow) before a minute
MAX_SERIES = 10_000  # per selector: more is a selector that matches far too much
_VARIANTS = {variant.value: variant for variant in Variant}
_SELECTORS = ("requests", "errors", "latency")


class PrometheusError(Unavailable):
    """Prometheus did not answer, or answered with something that is not a range vector."""


class _TooHeavy(PrometheusError):
    """A read too big for Prometheus or for canaryguard: it timed out, Prometheus refused to
    load that many samples, or a selector matches more than ``MAX_SERIES`` series. Only these
    make the hour-long first read fall back to a minute."""


class _TooMany(_TooHeavy):
    """A selector matches more than ``MAX_SERIES`` series."""


@dataclass
class _Reading:
    """What was read of one deployment's series so far: a tracker per query, so that a
    change of some selectors leaves the others' counting as it was."""

    trackers: dict[str, CounterTracker] = field(default_factory=dict)
    heavy_failures: int = 0  # reads in a row too heavy for their span: after a few, read less

    def tracker(self, query: str, *, after: float | None) -> CounterTracker:
        tracker = self.trackers.get(query)
        if tracker is None:
            # a query new to a deployment read before counts only what that read left
            tracker = self.trackers[query] = CounterTracker(after=after)
        return tracker


Series = list[tuple[dict[str, str], list[Sample]]]


class PrometheusSource:
    """Reads deployments' outcomes from the Prometheus at ``url`` (the ``MetricsSource``
    port)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(url)
            port = parsed.port
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidInput(f"the Prometheus URL is not a URL: {exc}") from exc
        # the credentials go in a header; the URL kept, shown and logged (httpx logs each
        # request's URL) has none
        bare = parsed.copy_with(username=None, password=None)
        self.url = str(bare).rstrip("/")
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            # without a scheme, "user:secret@host" parses as scheme "user": what comes before
            # an "@" is not shown, whatever it parsed as
            shown = self.url.rpartition("@")[2]
            raise InvalidInput(f"the Prometheus URL must be http(s)://host[:port], got {shown}")
        if port is not None and not 0 < port < 65_536:
            raise InvalidInput(f"the Prometheus URL's port must be 1 to 65535, got {port}")
        has_credentials = bool(parsed.username or parsed.password)
        auth = httpx.BasicAuth(parsed.username, parsed.password) if has_credentials else None
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport, auth=auth
        )
        # httpx's timeout bounds each socket operation; this bounds a whole answer, so that one
        # that trickles in cannot hold a deployment's read (and its judgement) open
        self.timeout = timeout
        self._readings: dict[str, _Reading] = {}
        # when each deployment was last read and up to which sample time, kept when its
        # reading is dropped: selectors given again later count only what came after (the
        # window store still holds the rest)
        self._last_reads: dict[str, tuple[float, float]] = {}

    async def close(self) -> None:
        await self._client.aclose()

    def forget(self, keep: Collection[str]) -> None:
        for name in set(self._readings) - set(keep):
            del self._readings[name]

    async def check(self, selectors: PrometheusSelectors) -> None:
        for name in _SELECTORS:
            selector = getattr(selectors, name)
            if selector is None:
                continue
            query = _bucket_of(selector) if name == "latency" else selector
            try:
                # the span of a first read: a selector that matches too many series over the
                # hour is refused now, not at every read after
                series = await self._query(f"{query}[{BACKFILL_SECONDS}s]", time=None)
            except _Refused as exc:
                raise InvalidInput(
                    f"prometheus.{name}: Prometheus refuses {query!r}: {exc}"
                ) from exc
            except _TooMany as exc:
                raise InvalidInput(f"prometheus.{name}: {exc}") from exc
            label = selectors.variant_label
            # no series yet is fine (the application may not run yet); series that none of
            # would ever be counted are a mistake in the selector or the label
            if series and not any(labels.get(label) in _VARIANTS for labels, _ in series):
                raise InvalidInput(
                    f"prometheus.{name}: none of the {len(series)} series {query!r} selects "
                    f'has the label {label}="stable" or {label}="canary"; label the '
                    "variant, or name the label that holds it in variant_label"
                )

    async def pull(
        self,
        deployment: str,
        selectors: PrometheusSelectors,
        *,
        now: float,
        until: float,
        canary_since: float | None = None,
    ) -> dict[tuple[Variant, int], SecondStats]:
        reading = self._readings.setdefault(deployment, _Reading())
        last_read, last_until = self._last_reads.get(deployment, (None, None))
        span = float(BACKFILL_SECONDS)
        if last_read is not None:
            span = min(BACKFILL_SECONDS, max(now - last_read, 0.0) + OVERLAP_SECONDS)
        if reading.heavy_failures >= BACKFILL_TRIES:
            # the hour before a first read, or the outage a read catches up on, is too much
            # to read at once: on without it rather than not at all
            span = OVERLAP_SECONDS
        seconds = math.ceil(span)
        queries = [selectors.requests, selectors.errors]
        if selectors.latency is not None:
            queries += [_bucket_of(selectors.latency), _suffixed(selectors.latency, "_sum")]
        try:
            # every query first, then the counting: a failed read leaves the trackers as they
            # were, so the next read counts the same samples again
            answers = await asyncio.gather(
                *(self._query(f"{query}[{seconds}s]", time=now) for query in queries)
            )
        except _Refused as exc:
            if exc.kind == "execution":
                reading.heavy_failures += 1  # too many samples to load for the span
            raise PrometheusError(f"Prometheus at {self.url} refuses a query: {exc}") from exc
        except _TooHeavy:
            reading.heavy_failures += 1
            raise
        reading.heavy_failures = 0
        # counting an hour of samples takes a while: off the event loop, which serves the API,
        # the monitor and the other deployments' reads meanwhile (only this deployment's read
        # touches its trackers: one read per deployment is in flight)
        read = _Read(selectors.variant_label, until, canary_since)
        counted = await asyncio.to_thread(
            functools.partial(
                _count,
                reading,
                answers,
                selectors=selectors,
                queries=queries,
                read=read,
                now=now,
                last_until=last_until,
            )
        )
        self._last_reads[deployment] = (now, until)
        return counted

    async def _query(self, query: str, *, time: float | None) -> Series:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._answer(query, time=time)
        except TimeoutError as exc:
            raise _TooHeavy(
                f"Prometheus at {self.url} did not answer within {self.timeout:g} s"
            ) from exc

    async def _answer(self, query: str, *, time: float | None) -> Series:
        params: dict[str, str] = {"query": query}
        if time is not None:
            params["time"] = f"{time:.3f}"
        try:
            response = await self._client.get("/api/v1/query", params=params)
        except httpx.TimeoutException as exc:
            raise _TooHeavy(f"Prometheus at {self.url} did not answer in time: {exc}") from exc
        except httpx.HTTPError as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} does not answer: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            # a first read's answer can be tens of megabytes: parsed off the event loop
            body: Any = await asyncio.to_thread(response.json)
        except ValueError as exc:
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {response.status_code} without JSON"
            ) from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            kind = body.get("errorType") if isinstance(body, dict) else None
            if response.status_code in {400, 422}:
                raise _Refused(str(error or f"HTTP {response.status_code}"), kind=str(kind))
            if kind == "timeout":
                raise _TooHeavy(f"Prometheus at {self.url} timed out: {error}")
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {response.status_code}: {error}"
            )
        warnings = body.get("warnings")
        if warnings:
            # a partial answer (a store that did not answer behind Thanos or Mimir, say) would
            # count its missing series' seconds as no traffic, for good: a failed read is
            # read again
            first = warnings[0] if isinstance(warnings, list) else warnings
            raise PrometheusError(
                f"Prometheus at {self.url} answered with warnings, so perhaps not whole: {first}"
            )
        return await asyncio.to_thread(_matrix, body.get("data"), self.url)


def _count(
    reading: _Reading,
    answers: list[Series],
    *,
    selectors: PrometheusSelectors,
    queries: list[str],
    read: _Read,
    now: float,
    last_until: float | None,
) -> dict[tuple[Variant, int], SecondStats]:
    """A read's answers counted into per-second outcomes (``PrometheusSource.pull``)."""
    for query in set(reading.trackers) - set(queries):
        del reading.trackers[query]  # a selector no longer used
    trackers = [reading.tracker(query, after=last_until) for query in queries]
    requests = seconds_of(read.increments(answers[0], trackers[0]))
    errors = seconds_of(read.increments(answers[1], trackers[1]))
    histograms: dict[tuple[Variant, int], dict[int, int]] = {}
    sums: dict[tuple[Variant, int], float] = {}
    if selectors.latency is not None:
        scale = 1_000.0 if selectors.latency_unit == "seconds" else 1.0
        histograms = read.histograms(answers[2], trackers[2], scale)
        sums = {
            key: amount * scale
            for key, amount in seconds_of(read.increments(answers[3], trackers[3])).items()
        }
    for tracker in reading.trackers.values():
        tracker.prune(before=now - BACKFILL_SECONDS)
    return {
        key: second_stats(
            requests.get(key, 0.0),
            errors.get(key, 0.0),
            sums.get(key, 0.0),
            histograms.get(key, {}),
        )
        for key in requests.keys() | errors.keys() | histograms.keys() | sums.keys()
    }


class _Refused(Exception):
    """Prometheus refused a query: HTTP 400 (``bad_data``: a bad selector) or 422
    (``execution``: too many samples to load, among others)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _matrix(data: Any, url: str) -> Series:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise PrometheusError(f"Prometheus at {url} did not answer with a range vector")
    result = data.get("result")
    if not isinstance(result, list):
        raise PrometheusError(f"Prometheus at {url} answered without a result list")
    if len(result) > MAX_SERIES:
        raise _TooMany(
            f"a selector matches {len(result)} series at {url}, more than {MAX_SERIES}: "
            "narrow it with label matchers"
        )
    series: Series = []
    for item in result:
        if isinstance(item, dict) and "values" not in item and "histograms" in item:
            continue  # a native histogram: canaryguard reads classic ones (_bucket series)
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            samples = [(float(t), float(v)) for t, v in item["values"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusError(f"Prometheus at {url} answered a malformed series") from exc
        series.append((labels, samples))
    return series


def _key(labels: dict[str, str]) -> SeriesKey:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True)
class _Read:
    """How one read counts its answers: which label names the variant, the last sample time
    it counts, and since when the canary's counts belong to the current canary run."""

    label: str
    until: float
    canary_since: float | None

    def _kept(self, variant: Variant, increment: Increment) -> bool:
        # a canary's increase over an interval that began before its run began may hold the
        # previous canary's requests (a rollback, then a new canary within a scrape): left
        # out, as reported outcomes of revisions before the run are
        since = self.canary_since
        return variant is not Variant.CANARY or since is None or increment[2] >= since

    def _counted(
        self, series: Series, tracker: CounterTracker
    ) -> Iterator[tuple[dict[str, str], Variant, Increment]]:
        """Each kept increment of each series of a variant, with the series' labels (a series
        of neither variant is never counted)."""
        for labels, samples in series:
            variant = _VARIANTS.get(labels.get(self.label, ""))
            if variant is None:
                continue
            for increment in tracker.increments(_key(labels), samples, until=self.until):
                if self._kept(variant, increment):
                    yield labels, variant, increment

    def increments(
        self, series: Series, tracker: CounterTracker
    ) -> list[tuple[Variant, int, float]]:
        return [(v, i[0], i[1]) for _, v, i in self._counted(series, tracker)]

    def histograms(
        self, series: Series, tracker: CounterTracker, scale: float
    ) -> dict[tuple[Variant, int], dict[int, int]]:
        """Per variant and second, the log-bucket histogram of its series' increases. Each
        histogram (its bucket series: the same labels but ``le``) is read on its own edges,
        then the log buckets are added up: targets of one variant may have different edges
        (a layout changed mid-rollout), and edges added across them would not be cumulative."""
        largest: dict[SeriesKey, float] = {}  # per histogram, its largest finite edge
        for labels, _ in series:
            edge = _edge(labels, scale)
            if edge is not None and math.isfinite(edge):
                group = _histogram_of(labels)
                largest[group] = max(largest.get(group, edge), edge)
        cumulative: dict[tuple[Variant, int, SeriesKey], dict[float, float]] = {}
        for labels, variant, (second, amount, _) in self._counted(series, tracker):
            edge = _edge(labels, scale)
            if edge is None:
                continue  # not a bucket series
            edges = cumulative.setdefault((variant, second, _histogram_of(labels)), {})
            edges[edge] = edges.get(edge, 0.0) + amount
        out: dict[tuple[Variant, int], dict[int, int]] = {}
        for (variant, second, group), edges in cumulative.items():
            merged = out.setdefault((variant, second), {})
            for bucket, count in latency_histogram(edges, largest=largest.get(group)).items():
                merged[bucket] = merged.get(bucket, 0) + count
        return out


def _edge(labels: dict[str, str], scale: float) -> float | None:
    """A bucket series' ``le`` in milliseconds (``math.inf`` for ``+Inf``), or None."""
    try:
        le = float(labels.get("le", "nan"))
    except ValueError:
        return None
    if math.isnan(le):
        return None
    return le * scale if math.isfinite(le) else math.inf


def _histogram_of(labels: dict[str, str]) -> SeriesKey:
    """The histogram a bucket series belongs to: its labels but ``le``."""
    return _key({name: value for name, value in labels.items() if name != "le"})


def _suffixed(selector: str, suffix: str) -> str:
    """``name{m}`` -> ``name<suffix>{m}`` (a histogram's series from its base name)."""
    name, brace, rest = selector.partition("{")
    return f"{name}{suffix}{brace}{rest}"


def _bucket_of(selector: str) -> str:
    return _suffixed(selector, "_bucket")
