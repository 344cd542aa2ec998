"""Policy versions and schemas in SQL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import policy_schemas, policy_versions
from canaryguard.domain.canonical import canonical_json
from canaryguard.domain.models import PolicyVersion

__all__ = ["SqlPolicyRepo"]


def _version(row: RowMapping) -> PolicyVersion:
    return PolicyVersion(
        name=row["name"],
        version=row["version"],
        seq=row["seq"],
        content_hash=row["content_hash"],
        document=json.loads(row["document"]),
        description=row["description"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


class SqlPolicyRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _one(self, *where: sa.ColumnElement[bool]) -> PolicyVersion | None:
        row = (
            (await self._conn.execute(sa.select(policy_versions).where(*where))).mappings().first()
        )
        return _version(row) if row is not None else None

    async def get(self, name: str, version: str) -> PolicyVersion | None:
        return await self._one(policy_versions.c.name == name, policy_versions.c.version == version)

    async def find_by_hash(self, name: str, content_hash: str) -> PolicyVersion | None:
        return await self._one(
            policy_versions.c.name == name, policy_versions.c.content_hash == content_hash
        )

    async def latest(self, name: str) -> PolicyVersion | None:
        query = (
            sa.select(policy_versions)
            .where(policy_versions.c.name == name)
            .order_by(policy_versions.c.seq.desc())
            .limit(1)
        )
        row = (await self._conn.execute(query)).mappings().first()
        return _version(row) if row is not None else None

    async def insert(self, version: PolicyVersion) -> None:
        await self._conn.execute(
            policy_versions.insert().values(
                name=version.name,
                version=version.version,
                seq=version.seq,
                content_hash=version.content_hash,
                document=canonical_json(version.document),
                description=version.description,
                created_at=version.created_at,
                created_by=version.created_by,
            )
        )

    async def versions(self, name: str) -> list[PolicyVersion]:
        query = (
            sa.select(policy_versions)
            .where(policy_versions.c.name == name)
            .order_by(policy_versions.c.seq)
        )
        return [_version(row) for row in (await self._conn.execute(query)).mappings()]

    async def names(self) -> list[str]:
        query = sa.select(policy_versions.c.name).distinct().order_by(policy_versions.c.name)
        return list((await self._conn.execute(query)).scalars())

    async def get_schema(self, name: str) -> dict[str, Any] | None:
        query = sa.select(policy_schemas.c.schema).where(policy_schemas.c.name == name)
        text = (await self._conn.execute(query)).scalar_one_or_none()
        return json.loads(text) if text is not None else None

    async def set_schema(
        self, name: str, schema: dict[str, Any], *, now: datetime, actor: str
    ) -> None:
        values = {"schema": canonical_json(schema), "updated_at": now, "updated_by": actor}
        updated = await self._conn.execute(
            policy_schemas.update().where(policy_schemas.c.name == name).values(**values)
        )
        if updated.rowcount == 0:
            await self._conn.execute(policy_schemas.insert().values(name=name, **values))
