"""Shared test data and set-up steps."""

from __future__ import annotations

from canaryguard.engine.app import CanaryGuard

V1 = {"security": {"tls": {"min_version": "1.2"}}, "rate_limit": 100}
V2 = {"security": {"tls": {"min_version": "1.3"}}, "rate_limit": 50}
ACTOR = "tester"


async def seed(guard: CanaryGuard, name: str = "shop/security") -> None:
    """A deployment ``name`` serving policy ``sec@1``, with ``sec@2`` published."""
    await guard.policies.publish("sec", V1, actor=ACTOR)
    await guard.policies.publish("sec", V2, actor=ACTOR)
    await guard.deployments.create(name, stable="sec@1", actor=ACTOR)
