"""Prometheus as a metrics source: Debian's Prometheus scraping an exporter the test drives,
read by ``PrometheusSource``, merged by the puller, judged by the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from canaryguard.adapters.prometheus import PrometheusError, PrometheusSource
from canaryguard.domain.assignment import Variant
from canaryguard.domain.counters import bucket_at_or_above
from canaryguard.domain.errors import InvalidInput, Unavailable
from canaryguard.domain.models import PrometheusSelectors
from canaryguard.domain.windows import SecondStats
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.pulling import LAG_SECONDS
from canaryguard.wiring import Settings, open_canaryguard
from tests.prometheus import Exporter, RunningPrometheus, exporter, running_prometheus
from tests.servers import free_port, running_server

SELECTORS = PrometheusSelectors(
    requests='http_requests_total{service="pay"}',
    errors='http_errors_total{service="pay"}',
    latency='http_request_duration_seconds{service="pay"}',
)
NAME = "payments/security"


class App:
    """An application's metrics as it would export them, per variant."""

    def __init__(self, metrics: Exporter) -> None:
        registry = metrics.registry
        self.requests = Counter(
            "http_requests", "requests", ["service", "variant"], registry=registry
        )
        self.errors = Counter("http_errors", "errors", ["service", "variant"], registry=registry)
        self.latency = Histogram(
            "http_request_duration_seconds",
            "latency",
            ["service", "variant"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        for variant in ("stable", "canary"):  # every series exists from the first scrape
            self.requests.labels("pay", variant)
            self.errors.labels("pay", variant)
            self.latency.labels("pay", variant)

    def serve(self, variant: str, requests: int, errors: int, latency_s: float) -> None:
        self.requests.labels("pay", variant).inc(requests)
        self.errors.labels("pay", variant).inc(errors)
        histogram = self.latency.labels("pay", variant)
        for _ in range(requests):
            histogram.observe(latency_s)


@pytest.fixture
def metrics() -> Iterator[Exporter]:
    with exporter() as running:
        yield running


@pytest.fixture
def prometheus(tmp_path: Path, metrics: Exporter) -> Iterator[RunningPrometheus]:
    with running_prometheus(tmp_path, metrics.target) as running:
        yield running


@pytest.fixture
async def source(prometheus: RunningPrometheus) -> AsyncIterator[PrometheusSource]:
    reader = PrometheusSource(prometheus.url)
    yield reader
    await reader.close()


async def pull(
    source: PrometheusSource,
    selectors: PrometheusSelectors = SELECTORS,
    *,
    canary_since: float | None = None,
) -> dict[tuple[Variant, int], SecondStats]:
    """A pull now, counting every sample Prometheus has."""
    now = time.time()
    return await source.pull(NAME, selectors, now=now, until=now, canary_since=canary_since)


def scraped(prometheus: RunningPrometheus, selector: str, variant: str, value: float) -> None:
    prometheus.wait_for_value(f'{selector[:-1]},variant="{variant}"}}', value)


async def started(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> App:
    """An application whose series Prometheus has scraped, and a first pull of them done."""
    app = App(metrics)
    scraped(prometheus, SELECTORS.requests, "canary", 0)
    await pull(source)
    return app


def totals(cells: dict[tuple[Variant, int], SecondStats]) -> dict[Variant, SecondStats]:
    out: dict[Variant, SecondStats] = {}
    for (variant, _), stats in cells.items():
        out.setdefault(variant, SecondStats()).merge(stats)
    return out


async def test_the_first_pull_reads_what_was_served_before_it(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = App(metrics)
    scraped(prometheus, SELECTORS.requests, "stable", 0)
    app.serve("stable", 7, 1, 0.08)
    scraped(prometheus, SELECTORS.requests, "stable", 7)
    scraped(prometheus, SELECTORS.errors, "stable", 1)
    pulled = totals(await pull(source))
    assert (pulled[Variant.STABLE].requests, pulled[Variant.STABLE].errors) == (7, 1)


async def test_a_pull_counts_what_each_variant_served_since_the_last(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = App(metrics)
    app.serve("stable", 7, 1, 0.08)
    scraped(prometheus, SELECTORS.requests, "stable", 7)
    await pull(source)
    app.serve("stable", 300, 3, 0.08)
    app.serve("canary", 30, 6, 0.08)
    scraped(prometheus, SELECTORS.requests, "stable", 307)
    scraped(prometheus, SELECTORS.errors, "canary", 6)
    scraped(prometheus, 'http_request_duration_seconds_count{service="pay"}', "canary", 30)
    pulled = totals(await pull(source))
    assert (pulled[Variant.STABLE].requests, pulled[Variant.STABLE].errors) == (300, 3)
    assert (pulled[Variant.CANARY].requests, pulled[Variant.CANARY].errors) == (30, 6)


async def test_a_pull_reads_the_latency_histogram_into_log_buckets(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = await started(prometheus, metrics, source)
    app.serve("canary", 10, 0, 0.08)
    app.serve("canary", 2, 0, 0.7)
    scraped(prometheus, 'http_request_duration_seconds_count{service="pay"}', "canary", 12)
    canary = totals(await pull(source))[Variant.CANARY]
    assert canary.histogram == {bucket_at_or_above(100.0): 10, bucket_at_or_above(1_000.0): 2}
    assert canary.latency_sum_ms == pytest.approx(10 * 80 + 2 * 700)


async def test_a_restarted_exporter_counts_from_zero(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = App(metrics)
    app.serve("canary", 50, 0, 0.01)
    scraped(prometheus, SELECTORS.requests, "canary", 50)
    await pull(source)
    metrics.registry.unregister(app.requests)  # the process restarts: its counter is new
    restarted = Counter(
        "http_requests", "requests", ["service", "variant"], registry=metrics.registry
    )
    restarted.labels("pay", "canary").inc(5)
    scraped(prometheus, SELECTORS.requests, "canary", 5)
    pulled = totals(await pull(source))
    assert pulled[Variant.CANARY].requests == 5


async def test_series_of_neither_variant_are_not_counted(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = await started(prometheus, metrics, source)
    app.serve("shadow", 40, 4, 0.01)
    app.serve("canary", 1, 0, 0.01)
    scraped(prometheus, SELECTORS.requests, "shadow", 40)
    scraped(prometheus, SELECTORS.requests, "canary", 1)
    pulled = totals(await pull(source))
    assert set(pulled) == {Variant.CANARY}
    assert pulled[Variant.CANARY].requests == 1


async def test_changing_one_selector_does_not_count_the_others_again(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = await started(prometheus, metrics, source)
    app.serve("canary", 20, 2, 0.01)
    scraped(prometheus, SELECTORS.requests, "canary", 20)
    scraped(prometheus, SELECTORS.errors, "canary", 2)
    await pull(source)
    changed = SELECTORS.model_copy(
        update={"errors": 'http_errors_total{service="pay",variant=~"stable|canary"}'}
    )
    assert totals(await pull(source, changed)) == {}
    app.serve("canary", 5, 1, 0.01)
    scraped(prometheus, SELECTORS.requests, "canary", 25)
    scraped(prometheus, SELECTORS.errors, "canary", 3)
    canary = totals(await pull(source, changed))[Variant.CANARY]
    assert (canary.requests, canary.errors) == (5, 1)


async def test_the_canarys_counts_from_before_its_run_are_left_out(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = await started(prometheus, metrics, source)
    app.serve("canary", 30, 9, 0.01)  # the last requests of a canary rolled back
    app.serve("stable", 30, 0, 0.01)
    scraped(prometheus, SELECTORS.requests, "canary", 30)
    scraped(prometheus, SELECTORS.requests, "stable", 30)
    pulled = totals(await pull(source, canary_since=time.time()))  # a new run began just now
    assert set(pulled) == {Variant.STABLE}


async def test_selected_series_without_the_variant_label_are_refused_by_the_check(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    App(metrics)
    scraped(prometheus, SELECTORS.requests, "canary", 0)
    unlabelled = SELECTORS.model_copy(update={"variant_label": "version"})
    with pytest.raises(InvalidInput, match=r"prometheus\.requests: none of the 2 series"):
        await source.check(unlabelled)


async def test_a_check_accepts_selectors_that_match_no_series_yet(
    source: PrometheusSource,
) -> None:
    await source.check(SELECTORS)


async def test_a_selector_prometheus_refuses_is_named_by_the_check(
    source: PrometheusSource,
) -> None:
    bad = SELECTORS.model_copy(update={"errors": "http_errors_total{service=~}"})
    with pytest.raises(InvalidInput, match=r"prometheus\.errors: Prometheus refuses"):
        await source.check(bad)


async def test_a_prometheus_that_does_not_answer_makes_pulls_fail_saying_where() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    reader = PrometheusSource(url)
    try:
        with pytest.raises(PrometheusError, match=f"Prometheus at {url} does not answer"):
            await pull(reader)
    finally:
        await reader.close()


async def test_an_answer_that_is_no_range_vector_fails_the_pull() -> None:
    def vector(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    reader = PrometheusSource("http://prometheus.invalid", transport=httpx.MockTransport(vector))
    try:
        with pytest.raises(PrometheusError, match="did not answer with a range vector"):
            await pull(reader)
    finally:
        await reader.close()


def test_a_prometheus_url_with_a_port_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidInput, match="port must be 1 to 65535"):
        PrometheusSource("http://127.0.0.1:99999")


async def test_credentials_in_the_url_never_reach_the_request_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    reader = PrometheusSource(
        "http://reader:s3cret@prometheus.invalid:9090", transport=httpx.MockTransport(empty)
    )
    try:
        with caplog.at_level(logging.DEBUG):
            await pull(reader)
    finally:
        await reader.close()
    assert "prometheus.invalid" in caplog.text
    assert "s3cret" not in caplog.text


def test_a_prometheus_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be http"):
        PrometheusSource("file:///etc/passwd")


# through the service: the setting is checked when saved, on both databases


@pytest.fixture
async def guard(
    db_url: str, tmp_path: Path, prometheus: RunningPrometheus
) -> AsyncIterator[CanaryGuard]:
    opened = await open_canaryguard(
        Settings(data_dir=tmp_path / "data", db_url=db_url, prometheus_url=prometheus.url)
    )
    await opened.policies.publish("sec", {"v": 1}, actor="t")
    await opened.deployments.create(NAME, stable="sec@1", actor="t")
    yield opened
    await opened.close()


async def test_selectors_prometheus_accepts_are_saved(guard: CanaryGuard) -> None:
    await guard.deployments.configure(
        NAME, changes={"prometheus": SELECTORS.model_dump()}, actor="t"
    )
    assert (await guard.deployments.get(NAME)).config.prometheus == SELECTORS


async def test_a_selector_prometheus_refuses_is_not_saved(guard: CanaryGuard) -> None:
    bad = {**SELECTORS.model_dump(), "requests": "http_requests_total{service~'pay'}"}
    with pytest.raises(InvalidInput, match=r"prometheus\.requests"):
        await guard.deployments.configure(NAME, changes={"prometheus": bad}, actor="t")
    deployment = await guard.deployments.get(NAME)
    assert (deployment.revision, deployment.config.prometheus) == (1, None)


async def test_a_selector_that_is_no_series_selector_is_refused_before_prometheus_is_asked(
    guard: CanaryGuard,
) -> None:
    bad = {**SELECTORS.model_dump(), "requests": "rate(http_requests_total[5m])"}
    with pytest.raises(InvalidInput, match=r"prometheus\.requests"):
        await guard.deployments.configure(NAME, changes={"prometheus": bad}, actor="t")
    assert (await guard.deployments.get(NAME)).config.prometheus is None


async def test_the_puller_merges_pulled_outcomes_into_the_window_store(
    guard: CanaryGuard, prometheus: RunningPrometheus, metrics: Exporter
) -> None:
    app = App(metrics)
    await guard.deployments.configure(
        NAME, changes={"prometheus": SELECTORS.model_dump()}, actor="t"
    )
    assert guard.puller is not None
    scraped(prometheus, SELECTORS.requests, "stable", 0)
    await guard.puller.pull()
    app.serve("stable", 120, 2, 0.03)
    scraped(prometheus, SELECTORS.requests, "stable", 120)
    await asyncio.sleep(LAG_SECONDS)  # the puller leaves the newest second for its next read
    assert await guard.puller.pull() >= 1
    now = int(time.time())
    stable = guard.ports.windows.totals(NAME, since=now - 60, until=now + 1)[Variant.STABLE]
    assert (stable.requests, stable.errors) == (120, 2)


async def test_selectors_on_a_server_without_prometheus_are_refused(
    db_url: str, tmp_path: Path
) -> None:
    opened = await open_canaryguard(Settings(data_dir=tmp_path / "plain", db_url=db_url))
    try:
        await opened.policies.publish("sec", {"v": 1}, actor="t")
        await opened.deployments.create(NAME, stable="sec@1", actor="t")
        with pytest.raises(InvalidInput, match="this server reads no Prometheus"):
            await opened.deployments.configure(
                NAME, changes={"prometheus": SELECTORS.model_dump()}, actor="t"
            )
        assert opened.puller is None
    finally:
        await opened.close()


async def test_selectors_are_refused_while_prometheus_does_not_answer(
    db_url: str, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    opened = await open_canaryguard(
        Settings(data_dir=tmp_path / "down", db_url=db_url, prometheus_url=url)
    )
    try:
        await opened.policies.publish("sec", {"v": 1}, actor="t")
        await opened.deployments.create(NAME, stable="sec@1", actor="t")
        with pytest.raises(Unavailable, match="does not answer"):
            await opened.deployments.configure(
                NAME, changes={"prometheus": SELECTORS.model_dump()}, actor="t"
            )
        assert (await opened.deployments.get(NAME)).config.prometheus is None
    finally:
        await opened.close()


# end to end: a served instance reading Prometheus rolls a bad canary back by itself


def traffic(app: App, canary_on: threading.Event, stop: threading.Event) -> None:
    """500 requests a second on stable at 1 % errors; while ``canary_on``, 50 more on the
    canary at 30 % errors."""
    rng = random.Random(7)
    while not stop.is_set():
        stable_errors = sum(rng.random() < 0.01 for _ in range(50))
        app.serve("stable", 50, stable_errors, 0.02)
        if canary_on.is_set():
            app.serve("canary", 5, sum(rng.random() < 0.3 for _ in range(5)), 0.02)
        time.sleep(0.1)


def test_a_served_instance_reading_prometheus_rolls_a_bad_canary_back_by_itself(
    serve_db: str | None, tmp_path: Path, prometheus: RunningPrometheus, metrics: Exporter
) -> None:
    app = App(metrics)
    canary_on, stop = threading.Event(), threading.Event()
    worker = threading.Thread(target=traffic, args=(app, canary_on, stop), daemon=True)
    worker.start()
    try:
        with (
            running_server(
                tmp_path / "data", serve_db, heartbeat_seconds=0.5, prometheus_url=prometheus.url
            ) as server,
            server.client() as admin,
        ):
            admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
            admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
            admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
            changed = admin.patch(
                f"/api/v1/deployments/{NAME}/config",
                json={
                    "changes": {"prometheus": SELECTORS.model_dump(), "error_rate_threshold": 0.9}
                },
            )
            assert changed.status_code == 200, changed.text
            time.sleep(3)  # some stable history first
            admin.post(
                f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 10}
            )
            canary_on.set()
            deadline = time.monotonic() + 90
            while admin.get(f"/api/v1/deployments/{NAME}").json()["state"] != "rolled_back":
                assert time.monotonic() < deadline, "the canary was never rolled back"
                time.sleep(0.5)
            events = admin.get("/api/v1/events/log", params={"deployment": NAME}).json()
    finally:
        stop.set()
        worker.join(10)
    triggered = [e for e in events if e["type"] == "io.canaryguard.rollback.auto_triggered"]
    assert len(triggered) == 1
    assert "canary errors" in triggered[0]["data"]["reason"]


async def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() -> None:
    sent: list[str | None] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(503, text="overloaded")

    reader = PrometheusSource(
        "http://reader:s3cret@prometheus.invalid:9090", transport=httpx.MockTransport(refuse)
    )
    try:
        with pytest.raises(PrometheusError) as failure:
            await pull(reader)
    finally:
        await reader.close()
    assert sent
    assert all(header == "Basic cmVhZGVyOnMzY3JldA==" for header in sent)
    assert "s3cret" not in str(failure.value)
    assert "http://prometheus.invalid:9090" in str(failure.value)


def scripted_prometheus(samples: list[tuple[float, float]]) -> httpx.MockTransport:
    """Every query answers one canary series with ``samples``, as far as the query's time."""

    def answer(request: httpx.Request) -> httpx.Response:
        at = float(request.url.params["time"])
        series = {
            "metric": {"__name__": "x", "variant": "canary"},
            "values": [[t, str(v)] for t, v in samples if t <= at],
        }
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": [series]}}
        )

    return httpx.MockTransport(answer)


async def test_a_changed_selector_counts_what_the_read_before_the_change_left() -> None:
    # the read at 100 counts up to 99; the scrape at 99.5 is the next read's, whichever
    # selector that read uses
    samples = [(98.0, 0.0), (99.0, 1.0), (99.5, 3.0), (100.5, 4.0)]
    reader = PrometheusSource("http://prometheus.test", transport=scripted_prometheus(samples))
    plain = PrometheusSelectors(requests="requests_total", errors="errors_total")
    changed = plain.model_copy(update={"errors": 'errors_total{code=~"5.."}'})
    try:
        first = await reader.pull(NAME, plain, now=100.0, until=99.0)
        second = await reader.pull(NAME, changed, now=101.0, until=100.0)
    finally:
        await reader.close()
    assert totals(first)[Variant.CANARY].errors == 1
    assert totals(second)[Variant.CANARY].errors == 2  # 99.5 read now; 100.5 left for later


async def test_a_password_without_a_user_is_sent_too() -> None:
    sent: list[str | None] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    reader = PrometheusSource(
        "http://:t0ken@prometheus.test", transport=httpx.MockTransport(record)
    )
    try:
        await pull(reader)
    finally:
        await reader.close()
    assert sent
    assert all(header == "Basic OnQwa2Vu" for header in sent)


def failing_prometheus(
    failure: Callable[[], httpx.Response], spans: list[str]
) -> httpx.MockTransport:
    """Records each query's range and answers with ``failure()``."""

    def answer(request: httpx.Request) -> httpx.Response:
        spans.append(request.url.params["query"].rsplit("[", 1)[1])
        return failure()

    return httpx.MockTransport(answer)


async def first_reads(failure: Callable[[], httpx.Response]) -> list[str]:
    """The range of the requests query of five first reads that fail with ``failure``."""
    spans: list[str] = []
    reader = PrometheusSource(
        "http://prometheus.test", transport=failing_prometheus(failure, spans)
    )
    try:
        for _ in range(5):
            with pytest.raises(PrometheusError):
                await pull(reader, PrometheusSelectors(requests="r", errors="e"))
    finally:
        await reader.close()
    return spans[::2]  # each read asks for requests, then errors


def refused_connection() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def timed_out() -> httpx.Response:
    raise httpx.ReadTimeout("timed out")


def too_many_samples() -> httpx.Response:
    return httpx.Response(
        422,
        json={
            "status": "error",
            "errorType": "execution",
            "error": "query processing would load too many samples into memory",
        },
    )


async def test_a_prometheus_that_is_not_up_yet_keeps_the_hour_long_first_read() -> None:
    assert await first_reads(refused_connection) == ["3660s]"] * 5


async def test_a_first_read_that_times_out_three_times_reads_a_minute() -> None:
    assert await first_reads(timed_out) == ["3660s]"] * 3 + ["60s]"] * 2


async def test_a_first_read_with_too_many_samples_three_times_reads_a_minute() -> None:
    assert await first_reads(too_many_samples) == ["3660s]"] * 3 + ["60s]"] * 2


async def test_requests_slower_than_every_bucket_edge_read_as_slower_than_the_largest(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    app = await started(prometheus, metrics, source)
    app.serve("canary", 10, 0, 2.0)  # every request 2 s; the largest edge is 1 s
    scraped(prometheus, SELECTORS.requests, "canary", 10)
    canary = totals(await pull(source))[Variant.CANARY]
    assert canary.histogram == {bucket_at_or_above(1_000.0) + 1: 10}


class TwoLayouts:
    """Two stable targets' histograms of one name with different edges (a bucket layout
    changed mid-rollout): pod a's requests take 50 ms, pod b's 300 ms."""

    def __init__(self) -> None:
        self.requests = 0

    def collect(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily("layout_seconds", "latency", labels=["pod", "variant"])
        n = self.requests
        latency.add_metric(
            ["a", "stable"], [("0.1", n), ("5.0", n), ("+Inf", n)], sum_value=0.05 * n
        )
        latency.add_metric(["b", "stable"], [("0.5", n), ("+Inf", n)], sum_value=0.3 * n)
        yield latency
        requests = CounterMetricFamily("layout_requests", "requests", labels=["pod", "variant"])
        requests.add_metric(["a", "stable"], n)
        requests.add_metric(["b", "stable"], n)
        yield requests


async def test_targets_with_different_bucket_edges_are_each_read_on_their_own(
    prometheus: RunningPrometheus, metrics: Exporter, source: PrometheusSource
) -> None:
    layouts = TwoLayouts()
    metrics.registry.register(layouts)
    selectors = PrometheusSelectors(
        requests="layout_requests_total", errors="layout_errors_total", latency="layout_seconds"
    )
    prometheus.wait_for("layout_seconds_bucket", lambda result: len(result) == 5)
    now = time.time()
    await source.pull(NAME, selectors, now=now, until=now)
    layouts.requests = 10
    for pod in ("a", "b"):
        prometheus.wait_for_value(f'layout_seconds_count{{pod="{pod}"}}', 10)
    now = time.time()
    stable = totals(await source.pull(NAME, selectors, now=now, until=now))[Variant.STABLE]
    assert stable.histogram == {bucket_at_or_above(100.0): 10, bucket_at_or_above(500.0): 10}


async def test_a_catch_up_read_too_heavy_after_an_outage_falls_back_to_a_minute() -> None:
    spans: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        span = int(request.url.params["query"].rsplit("[", 1)[1].rstrip("s]"))
        spans.append(span)
        if span > 600:  # this Prometheus answers ten minutes at most
            raise httpx.ReadTimeout("timed out")
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    reader = PrometheusSource("http://prometheus.test", transport=httpx.MockTransport(answer))
    selectors = PrometheusSelectors(requests="r", errors="e")
    now = 10_000.0
    try:
        for _ in range(3):  # the first read's hour is too much
            with pytest.raises(PrometheusError):
                await reader.pull("d", selectors, now=now, until=now - 1)
            now += 1
        await reader.pull("d", selectors, now=now, until=now - 1)  # a minute is fine
        now += 900  # then nothing read for a quarter of an hour
        for _ in range(3):
            with pytest.raises(PrometheusError):
                await reader.pull("d", selectors, now=now, until=now - 1)
            now += 1
        await reader.pull("d", selectors, now=now, until=now - 1)
    finally:
        await reader.close()
    assert spans[-1] == 60


async def test_an_answer_with_warnings_fails_the_read() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "status": "success",
                "data": {"resultType": "matrix", "result": []},
                "warnings": ["partial response: store canary-store-0 unreachable"],
            },
        )

    reader = PrometheusSource("http://prometheus.test", transport=httpx.MockTransport(answer))
    try:
        with pytest.raises(PrometheusError, match=r"warnings.*canary-store-0"):
            await pull(reader, PrometheusSelectors(requests="r", errors="e"))
    finally:
        await reader.close()


async def test_an_answer_that_trickles_in_fails_the_read_after_the_timeout() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:  # a byte at a time, each well within the per-read timeout
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = PrometheusSource(f"http://127.0.0.1:{port}", timeout=1.0)
    try:
        with pytest.raises(PrometheusError, match="did not answer within 1 s"):
            await asyncio.wait_for(
                pull(reader, PrometheusSelectors(requests="r", errors="e")), timeout=30
            )
    finally:
        await reader.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def test_credentials_in_a_url_without_a_scheme_are_not_shown() -> None:
    with pytest.raises(InvalidInput, match="http") as refused:
        PrometheusSource("reader:s3cret@prometheus:9090")
    assert "s3cret" not in str(refused.value)
