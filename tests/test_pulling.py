"""The metrics puller and the monitor together: a deployment read from a metrics source is
judged only as far as it was read, and nothing read is lost to the detector.

The source here is a scripted stand-in for Prometheus (the port's other side), so that reads
that fail, arrive late or carry seconds already judged happen exactly when the test says;
``tests/test_prometheus_source.py`` runs the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

import pytest

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import Unavailable
from canaryguard.domain.models import PrometheusSelectors
from canaryguard.domain.windows import SecondStats
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.monitor import CHECKPOINT_SECONDS
from canaryguard.engine.pulling import LAG_SECONDS, MAX_WAIT_SECONDS
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR, seed

NAME = "shop/security"
SELECTORS = PrometheusSelectors(requests="requests_total", errors="errors_total")

Cells = dict[tuple[Variant, int], SecondStats]


class ScriptedSource:
    """Answers each pull with the next scripted answer (empty when none is left); the port's
    signature is kept whole, so some arguments go unused."""

    url = "http://prometheus.test"

    def __init__(self) -> None:
        self.answers: list[Cells | Exception] = []
        self.pulls: list[dict[str, float | None]] = []
        self.read: list[str] = []  # the deployment of each pull
        self.stalled: dict[str, asyncio.Event] = {}  # reads of these wait for their event
        self.cancelled: list[str] = []  # deployments whose read was cancelled
        self.changed = asyncio.Event()  # set when a read starts or is cancelled

    async def pull(
        self,
        deployment: str,
        selectors: PrometheusSelectors,  # noqa: ARG002
        *,
        now: float,
        until: float,
        canary_since: float | None = None,
    ) -> Cells:
        self.read.append(deployment)
        self.changed.set()
        if deployment in self.stalled:
            try:
                await self.stalled[deployment].wait()
            except asyncio.CancelledError:
                self.cancelled.append(deployment)
                self.changed.set()
                raise
        self.pulls.append({"now": now, "until": until, "canary_since": canary_since})
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def check(self, selectors: PrometheusSelectors) -> None:  # noqa: ARG002
        return None

    def forget(self, keep: Collection[str]) -> None:  # noqa: ARG002
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
def source() -> ScriptedSource:
    return ScriptedSource()


@pytest.fixture
async def guard(
    db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path, source: ScriptedSource
) -> AsyncIterator[CanaryGuard]:
    opened = await open_canaryguard(
        Settings(data_dir=tmp_path / "data", db_url=db_url), clock=clock, keys=keys
    )
    pulled = CanaryGuard(dataclasses.replace(opened.ports, metrics_source=source))
    await seed(pulled)
    await pulled.deployments.configure(
        NAME, changes={"prometheus": SELECTORS.model_dump()}, actor=ACTOR
    )
    await pulled.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    yield pulled
    await pulled.close()


async def wait_out_failing_reads(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    """The first read fails, and so does one past the wait."""
    assert guard.puller is not None
    source.answers += [Unavailable("Prometheus does not answer")] * 2
    await guard.puller.pull()
    clock.advance(MAX_WAIT_SECONDS + 1)
    await guard.puller.pull()


def now_second(guard: CanaryGuard) -> int:
    return math.floor(guard.ports.clock.now().timestamp())


def complete_after_pull_at(second: float) -> int:
    return math.floor(second - LAG_SECONDS) - 1


async def test_a_pulled_deployment_is_not_judged_before_its_first_read(
    guard: CanaryGuard, clock: ManualClock
) -> None:
    clock.advance(1)
    await guard.monitor.tick()
    first = guard.monitor.watch(NAME)
    assert first is not None
    start = first.next_second
    clock.advance(20)
    await guard.monitor.tick()
    watch = guard.monitor.watch(NAME)
    assert watch is not None
    assert watch.next_second == start


async def test_a_pulled_deployment_is_judged_only_as_far_as_it_was_read(
    guard: CanaryGuard, clock: ManualClock
) -> None:
    clock.advance(5)
    assert guard.puller is not None
    await guard.puller.pull()
    read_at = clock.now().timestamp()
    clock.advance(20)
    await guard.monitor.tick()
    watch = guard.monitor.watch(NAME)
    assert watch is not None
    assert watch.next_second == complete_after_pull_at(read_at) + 1


async def test_a_second_read_after_it_was_judged_counts_in_the_first_open_second(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    clock.advance(10)
    await guard.puller.pull()
    await guard.monitor.tick()
    judged = complete_after_pull_at(clock.now().timestamp())
    late = SecondStats(requests=40, errors=4)
    source.answers.append({(Variant.CANARY, judged - 3): late})
    clock.advance(1)
    await guard.puller.pull()
    windows = guard.ports.windows
    assert windows.second(NAME, judged - 3) == {}
    assert windows.second(NAME, judged + 1)[Variant.CANARY].errors == 4


async def test_a_second_not_judged_yet_keeps_its_own_time(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    clock.advance(10)
    await guard.puller.pull()
    judged = complete_after_pull_at(clock.now().timestamp())
    source.answers.append({(Variant.CANARY, judged + 2): SecondStats(requests=40, errors=1)})
    clock.advance(5)
    await guard.puller.pull()
    assert guard.ports.windows.second(NAME, judged + 2)[Variant.CANARY].requests == 40


async def test_while_reads_fail_the_canary_waits_and_the_failure_is_logged_once(
    guard: CanaryGuard,
    clock: ManualClock,
    source: ScriptedSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert guard.puller is not None
    clock.advance(5)
    await guard.puller.pull()
    read_at = clock.now().timestamp()
    source.answers += [Unavailable("Prometheus at http://prometheus.test does not answer")] * 3
    with caplog.at_level(logging.WARNING, logger="canaryguard.engine.pulling"):
        for _ in range(3):
            clock.advance(1)
            await guard.puller.pull()
            await guard.monitor.tick()
    watch = guard.monitor.watch(NAME)
    assert watch is not None
    assert watch.next_second == complete_after_pull_at(read_at) + 1
    assert [r.getMessage() for r in caplog.records].count(
        f"{NAME}: reading metrics failed: Prometheus at http://prometheus.test does not answer"
    ) == 1


async def test_the_source_is_told_when_the_canary_run_began(
    guard: CanaryGuard, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    await guard.puller.pull()
    deployment = await guard.deployments.get(NAME)
    baseline = await guard.snapshots.get(deployment.baseline_snapshot_id or "")
    assert source.pulls[-1]["canary_since"] == baseline.created_at.timestamp()


async def test_the_monitor_judges_every_settled_second_of_a_deployment_not_read_from_a_source(
    db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    opened = await open_canaryguard(
        Settings(data_dir=tmp_path / "plain", db_url=db_url), clock=clock, keys=keys
    )
    try:
        await seed(opened)
        await opened.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
        clock.advance(20)
        await opened.monitor.tick()
        watch = opened.monitor.watch(NAME)
        assert watch is not None
        assert watch.next_second == int(opened.monitor.until(clock.now()).timestamp()) + 1
    finally:
        await opened.close()


async def test_a_server_without_prometheus_says_which_deployments_it_will_not_read(
    guard: CanaryGuard, db_url: str, clock: ManualClock, keys: AesGcmKeyRing, tmp_path: Path
) -> None:
    plain = await open_canaryguard(
        Settings(data_dir=tmp_path / "plain", db_url=db_url), clock=clock, keys=keys
    )
    try:
        assert [n for n in plain.notices if "names Prometheus series" in n] == [
            f"deployment {NAME} names Prometheus series, but this server reads no Prometheus "
            "(--prometheus URL or CANARYGUARD_PROMETHEUS_URL): its canaries are judged on what "
            "clients report only"
        ]
    finally:
        await plain.close()


async def test_after_the_wait_a_deployment_whose_reads_fail_is_judged_without_them(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    await wait_out_failing_reads(guard, clock, source)
    assert guard.puller is not None
    await guard.monitor.tick()
    watch = guard.monitor.watch(NAME)
    assert watch is not None
    assert watch.next_second == complete_after_pull_at(clock.now().timestamp()) + 1


async def test_the_first_read_keeps_its_seconds_even_after_the_wait(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    await wait_out_failing_reads(guard, clock, source)
    assert guard.puller is not None
    await guard.monitor.tick()
    judged = complete_after_pull_at(clock.now().timestamp())
    history = now_second(guard) - 3_000  # an hour's read: stable before the canary
    source.answers.append({(Variant.STABLE, history): SecondStats(requests=900, errors=9)})
    clock.advance(1)
    await guard.puller.pull()
    windows = guard.ports.windows
    assert windows.second(NAME, history)[Variant.STABLE].requests == 900
    assert windows.second(NAME, judged + 1) == {}


async def test_selectors_given_again_start_afresh_and_the_canary_waits_for_their_first_read(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    clock.advance(5)
    await guard.puller.pull()
    await guard.deployments.configure(NAME, changes={"prometheus": None}, actor=ACTOR)
    clock.advance(30)
    await guard.puller.pull()
    await guard.monitor.tick()  # judged as far as settled meanwhile
    await guard.deployments.configure(
        NAME, changes={"prometheus": SELECTORS.model_dump()}, actor=ACTOR
    )
    clock.advance(5)
    await guard.monitor.tick()
    watch = guard.monitor.watch(NAME)
    assert watch is not None
    waiting_at = watch.next_second
    meanwhile = waiting_at - 10  # judged while no selectors were given
    source.answers.append({(Variant.CANARY, meanwhile): SecondStats(requests=50, errors=1)})
    await guard.puller.pull()
    assert guard.ports.windows.second(NAME, meanwhile)[Variant.CANARY].requests == 50
    await guard.monitor.tick()
    assert watch.next_second > waiting_at


def steady(seconds: range) -> Cells:
    """Both variants of each of ``seconds`` at 1 % errors, 10 % canary."""
    cells: Cells = {}
    for second in seconds:
        cells[(Variant.CANARY, second)] = SecondStats(requests=100, errors=1)
        cells[(Variant.STABLE, second)] = SecondStats(requests=900, errors=9)
    return cells


async def test_a_resumed_run_refills_its_conditions_window_once_the_first_read_is_in(  # noqa: PLR0917 - fixtures
    guard: CanaryGuard,
    clock: ManualClock,
    source: ScriptedSource,
    db_url: str,
    keys: AesGcmKeyRing,
    tmp_path: Path,
) -> None:
    assert guard.puller is not None
    start = now_second(guard)
    for _ in range(CHECKPOINT_SECONDS + 10):
        source.answers.append(steady(range(now_second(guard) - 2, now_second(guard) - 1)))
        clock.advance(1)
        await guard.puller.pull()
        await guard.monitor.tick()
    served = steady(range(start, now_second(guard) - 2))
    restarted_source = ScriptedSource()
    opened = await open_canaryguard(
        Settings(data_dir=tmp_path / "restarted", db_url=db_url), clock=clock, keys=keys
    )
    restarted = CanaryGuard(dataclasses.replace(opened.ports, metrics_source=restarted_source))
    try:
        await restarted.monitor.tick()  # resumed from the checkpoint, nothing read yet
        watch = restarted.monitor.watch(NAME)
        assert watch is not None
        assert watch.refill_until is not None
        restarted_source.answers.append(served)  # the first read: the last hour
        assert restarted.puller is not None
        await restarted.puller.pull()
        await restarted.monitor.tick()
        assert watch.refill_until is None
        # every second of the run so far, read before the restart and judged or refilled
        assert watch.judge.metrics(clock.now()).canary.requests == 100 * len(served) // 2
    finally:
        await restarted.close()


async def test_the_puller_says_a_canary_waits_for_its_first_read(guard: CanaryGuard) -> None:
    assert guard.puller is not None
    deployment = await guard.deployments.get(NAME)
    assert guard.puller.waiting(deployment) == (
        "waiting for the first read of Prometheus (http://prometheus.test)"
    )


async def test_the_puller_says_since_when_reads_fail(
    guard: CanaryGuard, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    source.answers.append(Unavailable("Prometheus does not answer"))
    await guard.puller.pull()
    deployment = await guard.deployments.get(NAME)
    assert guard.puller.waiting(deployment).startswith(
        "reading Prometheus (http://prometheus.test) fails since "
    )


async def test_the_puller_says_nothing_once_reads_succeed(guard: CanaryGuard) -> None:
    assert guard.puller is not None
    await guard.puller.pull()
    assert guard.puller.waiting(await guard.deployments.get(NAME)) == ""


async def test_after_the_wait_the_puller_says_the_canary_is_judged_without_prometheus(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    await wait_out_failing_reads(guard, clock, source)
    assert guard.puller is not None
    waiting = guard.puller.waiting(await guard.deployments.get(NAME))
    assert waiting.startswith("reading Prometheus (http://prometheus.test) fails since ")
    assert "; judged without it since " in waiting


OTHER = "shop/other"


async def read_too(guard: CanaryGuard, name: str) -> None:
    """A second deployment with the same selectors and a canary of its own."""
    await guard.deployments.create(name, stable="sec@1", actor=ACTOR)
    await guard.deployments.configure(
        name, changes={"prometheus": SELECTORS.model_dump()}, actor=ACTOR
    )
    await guard.deployments.start_canary(name, policy="sec@2", percent=10, actor=ACTOR)


async def until(source: ScriptedSource, condition: Callable[[], bool]) -> None:
    """Waits (10 s at most) for the source's reads to make ``condition`` true."""
    async with asyncio.timeout(10):
        while True:
            source.changed.clear()
            if condition():
                return
            await source.changed.wait()


@contextlib.asynccontextmanager
async def pulling(guard: CanaryGuard) -> AsyncIterator[asyncio.Task[None]]:
    """The puller's loop running, a round every 10 ms; stopped on the way out."""
    assert guard.puller is not None
    task = asyncio.create_task(guard.puller.run(every=0.01))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_slow_read_holds_back_only_its_own_deployment(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    await read_too(guard, OTHER)
    source.stalled[NAME] = asyncio.Event()
    async with pulling(guard):
        await until(source, lambda: source.read.count(OTHER) >= 3)
        assert guard.puller is not None
        other = await guard.deployments.get(OTHER)
        stalled = await guard.deployments.get(NAME)
        read_at = clock.now().timestamp()
        assert guard.puller.complete_second(other) == complete_after_pull_at(read_at)
        assert guard.puller.complete_second(stalled) == -1


async def test_no_read_starts_for_a_deployment_while_its_last_is_in_flight(
    guard: CanaryGuard, source: ScriptedSource
) -> None:
    await read_too(guard, OTHER)
    source.stalled[NAME] = asyncio.Event()
    async with pulling(guard):
        await until(source, lambda: source.read.count(OTHER) >= 3)
        assert source.read.count(NAME) == 1
        source.stalled[NAME].set()
        await until(source, lambda: source.read.count(NAME) >= 2)


async def test_stopping_the_puller_cancels_the_reads_in_flight(
    guard: CanaryGuard, source: ScriptedSource
) -> None:
    source.stalled[NAME] = asyncio.Event()
    async with pulling(guard):
        await until(source, lambda: source.read.count(NAME) == 1)
    assert source.cancelled == [NAME]


async def test_a_read_in_flight_when_the_selectors_are_taken_away_is_dropped(
    guard: CanaryGuard, clock: ManualClock, source: ScriptedSource
) -> None:
    assert guard.puller is not None
    clock.advance(5)
    await guard.puller.pull()  # the first read is in
    source.stalled[NAME] = asyncio.Event()
    async with pulling(guard):
        await until(source, lambda: source.read.count(NAME) == 2)
        await guard.deployments.configure(NAME, changes={"prometheus": None}, actor=ACTOR)
        await until(source, lambda: source.cancelled == [NAME])
        await guard.deployments.configure(
            NAME, changes={"prometheus": SELECTORS.model_dump()}, actor=ACTOR
        )
        # the selectors given again wait for a first read of their own, not the old one's
        deployment = await guard.deployments.get(NAME)
        assert guard.puller.complete_second(deployment) == -1
        assert "first read" in guard.puller.waiting(deployment)


async def test_a_read_that_fails_unexpectedly_is_logged_and_the_loop_goes_on(
    guard: CanaryGuard, source: ScriptedSource, caplog: pytest.LogCaptureFixture
) -> None:
    source.answers.append(RuntimeError("boom"))
    with caplog.at_level(logging.ERROR):
        async with pulling(guard):
            await until(source, lambda: len(source.read) >= 2)
    failed = [r for r in caplog.records if "pulling metrics failed" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [f"{NAME}: pulling metrics failed"]


async def test_a_deployment_at_rest_is_read_too(guard: CanaryGuard, source: ScriptedSource) -> None:
    """Status, snapshots and the baseline a canary's start records read its seconds as well."""
    await guard.deployments.abort(NAME, reason="not yet", actor=ACTOR)
    assert guard.puller is not None
    await guard.puller.pull()
    assert source.read == [NAME]
