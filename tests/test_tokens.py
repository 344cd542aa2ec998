"""Token authentication: a token read once is reused for a second, never past its revocation
through this process, its expiry, or a second after a revocation elsewhere."""

from __future__ import annotations

from datetime import timedelta

from canaryguard.adapters.clock import ManualClock
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR


async def test_a_token_revoked_through_another_replica_is_refused_within_a_second(
    app: CanaryGuard, other_replica: CanaryGuard, clock: ManualClock
) -> None:
    _, secret = await app.tokens.create("sdk", role="reporter", actor=ACTOR)
    assert await app.tokens.authenticate(secret) is not None
    await other_replica.tokens.revoke("sdk", actor=ACTOR)
    clock.advance(app.tokens.remember_seconds)
    assert await app.tokens.authenticate(secret) is None


async def test_a_token_revoked_here_is_refused_at_once(app: CanaryGuard) -> None:
    _, secret = await app.tokens.create("sdk", role="reporter", actor=ACTOR)
    assert await app.tokens.authenticate(secret) is not None
    await app.tokens.revoke("sdk", actor=ACTOR)
    assert await app.tokens.authenticate(secret) is None


async def test_a_remembered_token_is_refused_once_it_expires(
    app: CanaryGuard, clock: ManualClock
) -> None:
    _, secret = await app.tokens.create(
        "brief", role="viewer", actor=ACTOR, expires_in=timedelta(milliseconds=500)
    )
    assert await app.tokens.authenticate(secret) is not None
    clock.advance(0.6)  # within the second a token is remembered
    assert await app.tokens.authenticate(secret) is None


async def test_a_token_tried_before_it_existed_works_once_created_here(app: CanaryGuard) -> None:
    secret = "cgt_" + "a" * 43
    assert await app.tokens.authenticate(secret) is None
    await app.tokens.create("late", role="viewer", actor=ACTOR, secret=secret)
    assert await app.tokens.authenticate(secret) is not None
