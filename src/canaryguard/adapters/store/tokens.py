"""API tokens in SQL (digests only)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import api_tokens
from canaryguard.domain.access import ApiToken, Role

__all__ = ["SqlTokenRepo"]


def _token(row: RowMapping) -> ApiToken:
    return ApiToken(
        name=row["name"],
        role=Role(row["role"]),
        digest=row["digest"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


_BY_DIGEST = sa.select(api_tokens).where(api_tokens.c.digest == sa.bindparam("digest"))


class SqlTokenRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _one(self, where: sa.ColumnElement[bool]) -> ApiToken | None:
        row = (await self._conn.execute(sa.select(api_tokens).where(where))).mappings().first()
        return _token(row) if row is not None else None

    async def by_digest(self, digest: str) -> ApiToken | None:
        # every API request authenticates: a statement built once
        row = (await self._conn.execute(_BY_DIGEST, {"digest": digest})).mappings().first()
        return _token(row) if row is not None else None

    async def get(self, name: str) -> ApiToken | None:
        return await self._one(api_tokens.c.name == name)

    async def insert(self, token: ApiToken) -> None:
        await self._conn.execute(api_tokens.insert().values(**token.model_dump()))

    async def revoke(self, name: str, *, at: datetime) -> None:
        await self._conn.execute(
            api_tokens.update().where(api_tokens.c.name == name).values(revoked_at=at)
        )

    async def all(self) -> list[ApiToken]:
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.name)
        return [_token(row) for row in (await self._conn.execute(query)).mappings()]

    async def count(self) -> int:
        return int(
            (
                await self._conn.execute(sa.select(sa.func.count()).select_from(api_tokens))
            ).scalar_one()
        )
