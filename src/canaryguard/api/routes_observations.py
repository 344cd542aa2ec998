"""Observations: clients report per-second outcomes in batches (JSON, optionally gzip)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from canaryguard.api.auth import get_guard, guarded
from canaryguard.domain.access import Access
from canaryguard.domain.models import Observation
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.observations import MAX_BATCH

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/observations", tags=["observations"])
Guard = Annotated[CanaryGuard, Depends(get_guard)]


class ObservationBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = Field(
        default=None,
        max_length=64,
        description="a retried batch with the same id is accepted once (send one per batch)",
        examples=["b-8f2c1e4a9d7b3f60"],
    )
    observations: list[Observation] = Field(max_length=MAX_BATCH)


class IngestOut(BaseModel):
    accepted: int
    duplicate: bool


@guarded(router, "POST", "", Access.REPORT, response_model=IngestOut, status_code=202)
async def report(body: ObservationBatchIn, guard: Guard) -> IngestOut:
    """Merge a batch of per-second aggregates (``Content-Encoding: gzip`` accepted). The whole
    batch is refused, naming the bad entry, when one entry is wrong."""
    result = await guard.observations.ingest(body.observations, batch_id=body.batch_id)
    return IngestOut(accepted=result.accepted, duplicate=result.duplicate)
