"""Deployments: create, canary, split, promote, abort, config, status, and their snapshots and
rollbacks. A deployment's name may hold '/', so it takes the rest of the path; sub-resources are
registered before the bare name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from canaryguard.api.auth import caller, get_guard, guarded
from canaryguard.api.problems import PreconditionFailed
from canaryguard.api.schemas import (
    MAX_SEQ,
    AbortIn,
    CanaryIn,
    ConfigIn,
    DecisionOut,
    DeploymentIn,
    DetectorTestOut,
    PreconditionIn,
    RollbackIn,
    SecondOut,
    SnapshotIn,
    SplitIn,
    StatusOut,
    VerdictOut,
)
from canaryguard.domain.access import Access, ApiToken
from canaryguard.domain.errors import Conflict, InvalidInput
from canaryguard.domain.models import (
    Assignment,
    Deployment,
    RollbackConfig,
    RollbackMetrics,
    RollbackRecord,
    Snapshot,
    SnapshotInfo,
)
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.monitor import Decision

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])
Guard = Annotated[CanaryGuard, Depends(get_guard)]
Caller = Annotated[ApiToken, Depends(caller)]
IfMatch = Annotated[str | None, Header(description='the revision you read, as "N"')]
PRECONDITION = {
    409: {"description": "stale expected_revision, or the state does not allow this"},
    412: {"description": "If-Match names a revision that is no longer current"},
}


def _etag(response: Response, deployment: Deployment) -> Deployment:
    response.headers["ETag"] = f'"{deployment.revision}"'
    return deployment


async def _with_precondition(
    body: PreconditionIn | None,
    if_match: str | None,
    change: Callable[[int | None], Awaitable[Deployment]],
) -> Deployment:
    """Run ``change`` with the revision from If-Match (412 when stale) or the body (409)."""
    if if_match is None:
        return await change(body.expected_revision if body is not None else None)
    try:
        expected = int(if_match.strip().strip('"').removeprefix("W/").strip('"'))
        if not 1 <= expected <= MAX_SEQ:
            raise ValueError(if_match)
    except ValueError as exc:
        raise InvalidInput(f'If-Match must be a revision like "7", got {if_match!r}') from exc
    try:
        return await change(expected)
    except Conflict as exc:
        if exc.current_revision is not None:
            raise PreconditionFailed(exc) from exc
        raise


@guarded(router, "GET", "", Access.READ, response_model=list[Deployment])
async def list_deployments(guard: Guard) -> list[Deployment]:
    return await guard.deployments.list()


@guarded(router, "POST", "", Access.OPERATE, response_model=Deployment, status_code=201)
async def create(body: DeploymentIn, guard: Guard, who: Caller, response: Response) -> Deployment:
    deployment = await guard.deployments.create(
        body.name, stable=body.stable, actor=who.name, config=body.config
    )
    return _etag(response, deployment)


@guarded(
    router,
    "POST",
    "/{name:path}/canary",
    Access.OPERATE,
    response_model=Deployment,
    responses=PRECONDITION,
)
async def start_canary(
    name: str,
    body: CanaryIn,
    guard: Guard,
    who: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> Deployment:
    """Start a canary (a snapshot of the state before it is taken first)."""

    async def change(expected: int | None) -> Deployment:
        return await guard.deployments.start_canary(
            name,
            policy=body.policy,
            percent=body.percent,
            criterion=body.criterion,
            attribute=body.attribute,
            canary_groups=body.canary_groups,
            stable_groups=body.stable_groups,
            actor=who.name,
            expected_revision=expected,
        )

    return _etag(response, await _with_precondition(body, if_match, change))


@guarded(
    router,
    "POST",
    "/{name:path}/split",
    Access.OPERATE,
    response_model=Deployment,
    responses=PRECONDITION,
)
async def set_split(
    name: str,
    body: SplitIn,
    guard: Guard,
    who: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> Deployment:
    async def change(expected: int | None) -> Deployment:
        return await guard.deployments.set_split(
            name,
            percent=body.percent,
            canary_groups=body.canary_groups,
            stable_groups=body.stable_groups,
            actor=who.name,
            expected_revision=expected,
        )

    return _etag(response, await _with_precondition(body, if_match, change))


@guarded(
    router,
    "POST",
    "/{name:path}/promote",
    Access.OPERATE,
    response_model=Deployment,
    responses=PRECONDITION,
)
async def promote(
    name: str,
    guard: Guard,
    who: Caller,
    response: Response,
    body: PreconditionIn | None = None,
    if_match: IfMatch = None,
) -> Deployment:
    async def change(expected: int | None) -> Deployment:
        return await guard.deployments.promote(name, actor=who.name, expected_revision=expected)

    return _etag(response, await _with_precondition(body, if_match, change))


@guarded(
    router,
    "POST",
    "/{name:path}/abort",
    Access.OPERATE,
    response_model=Deployment,
    responses=PRECONDITION,
)
async def abort(
    name: str,
    body: AbortIn,
    guard: Guard,
    who: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> Deployment:
    async def change(expected: int | None) -> Deployment:
        return await guard.deployments.abort(
            name, reason=body.reason, actor=who.name, expected_revision=expected
        )

    return _etag(response, await _with_precondition(body, if_match, change))


@guarded(router, "GET", "/{name:path}/config", Access.READ, response_model=RollbackConfig)
async def get_config(name: str, guard: Guard) -> RollbackConfig:
    return (await guard.deployments.get(name)).config


@guarded(
    router,
    "PATCH",
    "/{name:path}/config",
    Access.ADMIN,
    response_model=Deployment,
    responses=PRECONDITION,
)
async def set_config(
    name: str,
    body: ConfigIn,
    guard: Guard,
    who: Caller,
    response: Response,
    if_match: IfMatch = None,
) -> Deployment:
    """Change rollback settings at run time; unknown keys and bad values are refused."""

    async def change(expected: int | None) -> Deployment:
        return await guard.deployments.configure(
            name, changes=body.changes, actor=who.name, expected_revision=expected
        )

    return _etag(response, await _with_precondition(body, if_match, change))


@guarded(router, "GET", "/{name:path}/status", Access.READ, response_model=StatusOut)
async def status(name: str, guard: Guard) -> StatusOut:
    """The deployment, both variants' metrics over its window, and its rollback record."""
    deployment = await guard.deployments.get(name)
    rollbacks = await guard.rollbacks.list(deployment=name, limit=20)
    return StatusOut(
        deployment=deployment,
        canary_percent=deployment.split.canary_percent,
        metrics=await guard.observations.summary(name),
        rollbacks=await guard.rollbacks.metrics(deployment=name),
        open_rollbacks=[r for r in rollbacks if r.status.is_open],
    )


@guarded(router, "GET", "/{name:path}/verdict", Access.READ, response_model=VerdictOut)
async def verdict(name: str, guard: Guard) -> VerdictOut:
    """What the monitor says of the canary now: the detector's tests, each condition, and an
    automatic rollback taken or waiting for its veto window."""
    deployment = await guard.deployments.get(name)  # 404 for an unknown name
    watch = guard.monitor.watch(name)
    if watch is None:
        return VerdictOut(deployment=name, judged=False, verdict="not_judged")
    waiting = guard.puller.waiting(deployment) if guard.puller is not None else ""
    decision = watch.decision
    return VerdictOut(
        deployment=name,
        judged=True,
        verdict=watch.judge.verdict.kind.value,
        condition=watch.judge.verdict.condition,
        reason=watch.judge.verdict.reason,
        tests=[
            DetectorTestOut(
                name=t.name,
                e_value=t.e_value,
                threshold=t.threshold,
                dispersion=t.dispersion,
                canary_rate=t.canary_rate,
                stable_rate=t.stable_rate,
                canary_requests=t.canary_requests,
                stable_requests=t.stable_requests,
            )
            for t in (test.state() for test in watch.judge.detector.tests)
        ],
        dispersion_block_seconds=watch.judge.detector.config.block_seconds,
        conditions=watch.judge.results,
        judged_until=watch.next_second - 1,
        waiting=waiting,
        metrics=watch.judge.metrics(guard.monitor.until(guard.ports.clock.now())),
        since_start=guard.monitor.since_start(watch, guard.ports.clock.now()),
        decision=None if decision is None else _decision_out(decision),
    )


@guarded(router, "GET", "/{name:path}/observations", Access.READ, response_model=list[SecondOut])
async def observations(
    name: str,
    guard: Guard,
    since: Annotated[int, Query(ge=0, le=2**40, description="first second (Unix time)")],
) -> list[SecondOut]:
    """Settled per-second outcomes of each variant from ``since`` (at most one hour of them, from
    the server's memory): what ``canaryguard record`` writes out."""
    deployment = await guard.deployments.get(name)  # 404 for an unknown name
    # as far as the monitor would judge: settled, and read from Prometheus when it is
    last = guard.monitor.last_second(deployment, guard.ports.clock.now())
    return [
        SecondOut(
            second=second,
            variant=variant,
            requests=stats.requests,
            errors=stats.errors,
            latency_sum_ms=stats.latency_sum_ms,
            latency_max_ms=stats.latency_max_ms,
            histogram=stats.histogram,
        )
        for second in range(max(since, last - 3_599), last + 1)
        for variant, stats in sorted(guard.ports.windows.second(name, second).items())
    ]


@guarded(router, "POST", "/{name:path}/veto", Access.OPERATE, response_model=DecisionOut)
async def veto(name: str, guard: Guard, who: Caller) -> DecisionOut:
    """Cancel an automatic rollback that waits in its veto window (``veto_seconds``)."""
    return _decision_out(await guard.monitor.veto(name, actor=who.name))


def _decision_out(decision: Decision) -> DecisionOut:
    return DecisionOut(
        condition=decision.condition,
        reason=decision.reason,
        decided_at=decision.decided_at,
        rollback_id=decision.rollback_id,
        veto_until=decision.veto_until,
        vetoed_by=decision.vetoed_by,
    )


@guarded(router, "GET", "/{name:path}/snapshots", Access.READ, response_model=list[SnapshotInfo])
async def list_snapshots(name: str, guard: Guard) -> list[SnapshotInfo]:
    return await guard.snapshots.list(name)


@guarded(
    router,
    "POST",
    "/{name:path}/snapshots",
    Access.OPERATE,
    response_model=Snapshot,
    status_code=201,
)
async def create_snapshot(name: str, body: SnapshotIn, guard: Guard, who: Caller) -> Snapshot:
    return await guard.snapshots.create(
        name, actor=who.name, note=body.note, pinned=body.pinned, metadata=body.metadata
    )


@guarded(router, "GET", "/{name:path}/rollbacks", Access.READ, response_model=list[RollbackRecord])
async def list_rollbacks(
    name: str, guard: Guard, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[RollbackRecord]:
    await guard.deployments.get(name)  # 404 for an unknown deployment
    return await guard.rollbacks.list(deployment=name, limit=limit)


@guarded(
    router,
    "POST",
    "/{name:path}/rollbacks",
    Access.OPERATE,
    response_model=RollbackRecord,
    status_code=201,
    responses={
        **PRECONDITION,
        403: {"description": "the deployment needs a second person to confirm"},
        500: {"description": "the rollback failed; nothing changed; it is recorded"},
    },
)
async def rollback(
    name: str, body: RollbackIn, guard: Guard, who: Caller, if_match: IfMatch = None
) -> RollbackRecord:
    """Roll back now (``confirm``, the default), or start a rollback that waits for a
    confirmation: to ``to`` or to the state before the canary."""
    record: list[RollbackRecord] = []

    async def change(expected: int | None) -> Deployment:
        reason, actor, to = body.reason, who.name, body.to
        if not body.confirm:
            started = await guard.rollbacks.request(
                name, reason=reason, actor=actor, to=to, expected_revision=expected,
                staged=body.staged,
            )  # fmt: skip
        elif body.staged:
            started = await guard.executor.start(
                name, reason=reason, actor=actor, to=to, expected_revision=expected
            )
        else:
            started = await guard.rollbacks.rollback(
                name, reason=reason, actor=actor, to=to, expected_revision=expected
            )
        record.append(started)
        return await guard.deployments.get(name)

    await _with_precondition(body, if_match, change)
    return record[0]


@guarded(router, "GET", "/{name:path}/assignment", Access.STATE, response_model=Assignment)
async def assignment(
    name: str,
    guard: Guard,
    user_id: Annotated[str | None, Query(max_length=256)] = None,
    ip: Annotated[str | None, Query(max_length=64)] = None,
    attribute: Annotated[
        list[str], Query(max_length=32, description="KEY=VALUE, repeatable (attribute criterion)")
    ] = [],  # noqa: B006 - FastAPI copies query defaults per request
    group: Annotated[list[str], Query(max_length=32, description="user groups, repeatable")] = [],  # noqa: B006
) -> Assignment:
    """Which variant and policy document one request gets, for clients that cannot run the
    assignment code themselves (the SDK computes the same answer locally)."""
    attributes: dict[str, str] = {}
    for item in attribute:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"attribute must be KEY=VALUE, got {item!r}")
        attributes[key] = value
    return await guard.deployments.assign(
        name, user_id=user_id, ip=ip, attributes=attributes, groups=group
    )


@guarded(router, "GET", "/{name:path}/metrics", Access.READ, response_model=RollbackMetrics)
async def rollback_metrics(name: str, guard: Guard) -> RollbackMetrics:
    await guard.deployments.get(name)
    return await guard.rollbacks.metrics(deployment=name)


@guarded(router, "GET", "/{name:path}", Access.STATE, response_model=Deployment)
async def get_deployment(name: str, guard: Guard, response: Response) -> Deployment:
    """Who gets what: stable and canary versions, the split, the state, the revision (ETag)."""
    return _etag(response, await guard.deployments.get(name))
