"""Policies, their versions and schemas."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from canaryguard.api.auth import caller, get_guard, guarded
from canaryguard.api.schemas import ChangeOut, PolicySummary, PublishIn, SchemaIn
from canaryguard.domain.access import Access, ApiToken
from canaryguard.domain.diff import diff_values
from canaryguard.domain.errors import NotFound
from canaryguard.domain.models import PolicyVersion
from canaryguard.engine.app import CanaryGuard

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/policies", tags=["policies"])
Guard = Annotated[CanaryGuard, Depends(get_guard)]
Caller = Annotated[ApiToken, Depends(caller)]


@guarded(router, "GET", "", Access.READ, response_model=list[PolicySummary])
async def list_policies(guard: Guard) -> list[PolicySummary]:
    """Every policy with its latest version."""
    summaries = []
    for name in await guard.policies.names():
        versions = await guard.policies.versions(name)
        summaries.append(
            PolicySummary(name=name, latest_version=versions[-1].version, versions=len(versions))
        )
    return summaries


@guarded(
    router,
    "POST",
    "/{name}/versions",
    Access.OPERATE,
    response_model=PolicyVersion,
    status_code=201,
    responses={200: {"description": "identical content was already published: that version"}},
)
async def publish(
    name: str, body: PublishIn, guard: Guard, who: Caller, response: Response
) -> PolicyVersion:
    """Publish a version (201), or get the existing one with identical content (200)."""
    before = {v.content_hash for v in await _versions_or_empty(guard, name)}
    published = await guard.policies.publish(
        name, body.document, actor=who.name, version=body.version, description=body.description
    )
    if published.content_hash in before:
        response.status_code = 200
    return published


async def _versions_or_empty(guard: CanaryGuard, name: str) -> list[PolicyVersion]:
    try:
        return await guard.policies.versions(name)
    except NotFound:
        return []


@guarded(router, "GET", "/{name}/versions", Access.READ, response_model=list[PolicyVersion])
async def versions(name: str, guard: Guard) -> list[PolicyVersion]:
    return await guard.policies.versions(name)


@guarded(router, "GET", "/{name}/versions/{version}", Access.STATE, response_model=PolicyVersion)
async def version(name: str, version: str, guard: Guard) -> PolicyVersion:
    return await guard.policies.get(f"{name}@{version}")


@guarded(router, "GET", "/{name}/diff", Access.READ, response_model=list[ChangeOut])
async def diff(
    name: str,
    guard: Guard,
    from_version: Annotated[str, Query(alias="from", max_length=64)],
    to_version: Annotated[str, Query(alias="to", max_length=64)],
) -> list[ChangeOut]:
    """Every difference between two versions' documents."""
    old = await guard.policies.get(f"{name}@{from_version}")
    new = await guard.policies.get(f"{name}@{to_version}")
    return [
        ChangeOut.model_validate(c, from_attributes=True)
        for c in diff_values(old.document, new.document)
    ]


@guarded(router, "PUT", "/{name}/schema", Access.OPERATE, status_code=204)
async def set_schema(name: str, body: SchemaIn, guard: Guard, who: Caller) -> Response:
    """Register the JSON Schema every later version (and every canary start) must satisfy."""
    await guard.policies.set_schema(name, body.json_schema, actor=who.name)
    return Response(status_code=204)


@guarded(router, "GET", "/{name}/schema", Access.READ, response_model=dict[str, Any])
async def get_schema(name: str, guard: Guard) -> dict[str, Any]:
    schema = await guard.policies.get_schema(name)
    if schema is None:
        raise NotFound(f"policy {name!r} has no schema")
    return schema
