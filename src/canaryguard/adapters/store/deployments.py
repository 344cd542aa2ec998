"""Deployments in SQL, with the revision check that stops a stale writer (invariant 4)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import deployments
from canaryguard.domain.conditions import STORED_CONTEXT
from canaryguard.domain.errors import Conflict
from canaryguard.domain.models import Deployment, DeploymentState

__all__ = ["SqlDeploymentRepo"]


# Built once: the hot path then skips statement construction and cache-key work per call.
_GET = sa.select(deployments.c.body).where(deployments.c.name == sa.bindparam("name"))
_UPDATE = (
    deployments.update()
    .where(
        deployments.c.name == sa.bindparam("match_name"),
        deployments.c.revision == sa.bindparam("expected"),
    )
    .values(
        revision=sa.bindparam("revision"),
        state=sa.bindparam("state"),
        updated_at=sa.bindparam("updated_at"),
        body=sa.bindparam("body"),
    )
)


_CHUNK = 500


class SqlDeploymentRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, name: str) -> Deployment | None:
        body = (await self._conn.execute(_GET, {"name": name})).scalar_one_or_none()
        return (
            Deployment.model_validate_json(body, context=STORED_CONTEXT)
            if body is not None
            else None
        )

    async def insert(self, deployment: Deployment) -> None:
        await self._conn.execute(
            deployments.insert().values(
                name=deployment.name,
                revision=deployment.revision,
                state=deployment.state.value,
                updated_at=deployment.updated_at,
                body=deployment.model_dump_json(),
            )
        )

    async def update(self, deployment: Deployment, *, expected_revision: int) -> None:
        if deployment.revision <= expected_revision:
            raise ValueError("a deployment's revision must grow on every update")
        result = await self._conn.execute(
            _UPDATE,
            {
                "match_name": deployment.name,
                "expected": expected_revision,
                "revision": deployment.revision,
                "state": deployment.state.value,
                "updated_at": deployment.updated_at,
                "body": deployment.model_dump_json(),
            },
        )
        if result.rowcount != 1:
            query = sa.select(deployments.c.revision).where(deployments.c.name == deployment.name)
            current = (await self._conn.execute(query)).scalar_one_or_none()
            raise Conflict(
                f"deployment {deployment.name} changed meanwhile: revision {expected_revision} "
                f"was read, it is now {current}",
                current_revision=current,
            )

    async def revisions(self) -> dict[str, int]:
        query = sa.select(deployments.c.name, deployments.c.revision)
        rows = (await self._conn.execute(query)).all()
        return {str(name): int(revision) for name, revision in rows}

    async def many(self, names: Collection[str]) -> list[Deployment]:
        wanted, found = sorted(names), []
        for start in range(0, len(wanted), _CHUNK):  # bounded IN lists (bind-parameter limits)
            query = (
                sa.select(deployments.c.body)
                .where(deployments.c.name.in_(wanted[start : start + _CHUNK]))
                .order_by(deployments.c.name)
            )
            found += await self._decoded(query)
        return found

    async def existing(self, names: Collection[str]) -> set[str]:
        if not names:
            return set()
        query = sa.select(deployments.c.name).where(deployments.c.name.in_(list(names)))
        return set((await self._conn.execute(query)).scalars())

    async def all(self, states: Collection[DeploymentState] | None = None) -> list[Deployment]:
        query = sa.select(deployments.c.body).order_by(deployments.c.name)
        if states is not None:
            query = query.where(deployments.c.state.in_(sorted(states)))
        return await self._decoded(query)

    async def _decoded(self, query: sa.Select[Any]) -> list[Deployment]:
        return [
            Deployment.model_validate_json(body, context=STORED_CONTEXT)
            for body in (await self._conn.execute(query)).scalars()
        ]
