"""Random operation sequences through the engine and a real store (hypothesis).

Whatever the order, a deployment never reaches an inconsistent state, its revision grows by one
on every accepted change and not at all on a refused one, retention holds, and the audit chain
verifies."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.domain.errors import CanaryGuardError
from canaryguard.domain.models import DeploymentState
from canaryguard.domain.states import CANARY_STATES
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR, seed

NAME = "shop/security"
MAX_SNAPSHOTS = 4

operations = st.lists(
    st.one_of(
        st.tuples(st.just("canary"), st.integers(0, 10_000)),
        st.tuples(st.just("split"), st.integers(0, 10_000)),
        st.tuples(st.just("promote"), st.just(0)),
        st.tuples(st.just("abort"), st.just(0)),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("rollback"), st.just(0)),
        st.tuples(st.just("rollback_to"), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def engine(
    db_url: str, tmp_path_factory: pytest.TempPathFactory, runner: asyncio.Runner
) -> Iterator[CanaryGuard]:
    guard = runner.run(
        open_canaryguard(
            Settings(data_dir=tmp_path_factory.mktemp("seq"), db_url=db_url),
            clock=ManualClock(),
            keys=AesGcmKeyRing.generate(),
        )
    )
    yield guard
    runner.run(guard.close())


async def _apply(app: CanaryGuard, name: str, arg: int) -> None:
    percent = arg / 100
    if name == "canary":
        stable = (await app.deployments.get(NAME)).stable.version
        other = "sec@2" if stable == "1" else "sec@1"
        await app.deployments.start_canary(NAME, policy=other, percent=percent, actor=ACTOR)
    elif name == "split":
        await app.deployments.set_split(NAME, percent=percent, actor=ACTOR)
    elif name == "promote":
        await app.deployments.promote(NAME, actor=ACTOR)
    elif name == "abort":
        await app.deployments.abort(NAME, reason="stop", actor=ACTOR)
    elif name == "snapshot":
        await app.snapshots.create(NAME, actor=ACTOR)
    elif name == "rollback":
        await app.rollbacks.rollback(NAME, reason="back", actor=ACTOR)
    else:
        infos = await app.snapshots.list(NAME)
        if infos:
            await app.rollbacks.rollback(
                NAME, to=infos[arg % len(infos)].id, reason="to", actor=ACTOR
            )


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequence=operations)
def test_random_sequences_keep_every_invariant(
    engine: CanaryGuard, runner: asyncio.Runner, sequence: list[tuple[str, int]]
) -> None:
    async def check() -> None:
        app = engine
        if not await app.policies.names():
            await seed(app)
            await app.deployments.configure(
                NAME, changes={"max_snapshots": MAX_SNAPSHOTS}, actor=ACTOR
            )
        for name, arg in sequence:
            before = (await app.deployments.get(NAME)).revision
            try:
                await _apply(app, name, arg)
            except CanaryGuardError:
                assert (await app.deployments.get(NAME)).revision == before
                continue
            after = await app.deployments.get(NAME)
            assert after.revision in (
                before,
                before + 1,
            )  # a snapshot does not change the deployment
            assert (after.revision == before) == (name == "snapshot")
            if after.state in CANARY_STATES:
                assert after.canary is not None
            if after.canary is None:
                assert after.split.canary_basis_points == 0
            else:
                assert after.state in CANARY_STATES | {DeploymentState.FAILED}
            assert len(await app.snapshots.list(NAME)) <= MAX_SNAPSHOTS
        assert (await app.audit.verify()).ok

    runner.run(check())
