"""Recording outcomes: validated, merged per second, summarised over the window."""

from __future__ import annotations

import math

import pytest

from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import InvalidInput, NotFound
from canaryguard.engine.app import CanaryGuard
from tests.helpers import seed

NAME = "shop/security"


async def test_observations_merge_per_second_and_summarise(app: CanaryGuard) -> None:
    await seed(app)
    now = app.ports.clock.now()
    for _ in range(2):
        await app.observations.record(
            NAME,
            Variant.CANARY,
            at=now,
            requests=10,
            errors=1,
            latency_sum_ms=100,
            latency_max_ms=30,
        )
    summary = await app.observations.summary(NAME)
    assert (summary.canary.requests, summary.canary.errors, summary.canary.latency_max_ms) == (
        20,
        2,
        30,
    )
    assert summary.canary.error_rate == 0.1
    assert summary.stable.requests == 0


async def test_observations_outside_the_window_do_not_count(app: CanaryGuard) -> None:
    await seed(app)
    await app.observations.record(
        NAME,
        "stable",
        at=app.ports.clock.now(),
        requests=5,
        errors=0,
        latency_sum_ms=5,
        latency_max_ms=1,
    )
    app.ports.clock.advance(5 * 60 + 1)  # type: ignore[attr-defined]
    assert (await app.observations.summary(NAME)).stable.requests == 0


@pytest.mark.parametrize(
    ("requests", "errors", "latency", "message"),
    [
        (1, 2, 1.0, "errors <= requests"),
        (-1, 0, 1.0, "errors <= requests"),
        (1, 0, math.inf, "finite"),
        (1, 0, math.nan, "finite"),
        (1, 0, -1.0, "not negative"),
    ],
)
async def test_bad_observations_are_refused(
    app: CanaryGuard, requests: int, errors: int, latency: float, message: str
) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match=message):
        await app.observations.record(
            NAME, "canary", at=app.ports.clock.now(), requests=requests, errors=errors,
            latency_sum_ms=latency, latency_max_ms=latency,
        )  # fmt: skip


async def test_observation_for_an_unknown_deployment_is_refused(app: CanaryGuard) -> None:
    with pytest.raises(NotFound):
        await app.observations.record(
            "ghost",
            "canary",
            at=app.ports.clock.now(),
            requests=1,
            errors=0,
            latency_sum_ms=1,
            latency_max_ms=1,
        )


async def test_unknown_variant_is_refused(app: CanaryGuard) -> None:
    await seed(app)
    with pytest.raises(InvalidInput, match="stable or canary"):
        await app.observations.record(
            NAME,
            "blue",
            at=app.ports.clock.now(),
            requests=1,
            errors=0,
            latency_sum_ms=1,
            latency_max_ms=1,
        )
