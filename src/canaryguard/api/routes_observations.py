"""Observations: clients report per-second outcomes in batches (JSON, optionally gzip)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from canaryguard.api.auth import get_guard, guarded
from canaryguard.domain.access import Access
from canaryguard.domain.models import Observation
from canaryguard.domain.observation_batch import CONTENT_TYPE, BatchFormatError, decode
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


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references written out (the request body's schema is
    declared by hand, where ``#/$defs/...`` would not resolve)."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(ObservationBatchIn.model_json_schema())},
            CONTENT_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "the compact batch of docs/client.md (what the SDK sends)",
                }
            },
        },
    }
}


@guarded(
    router,
    "POST",
    "",
    Access.REPORT,
    response_model=IngestOut,
    status_code=202,
    openapi_extra=_BODY,
)
async def report(request: Request, guard: Guard) -> IngestOut:
    """Merge a batch of per-second aggregates: JSON, or the compact binary batch
    (``Content-Type: application/vnd.canaryguard.observations``); ``Content-Encoding: gzip``
    accepted. The whole batch is refused, naming the bad entry, when one entry is wrong."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media_type.lower() == CONTENT_TYPE:
        try:
            batch = decode(await request.body(), max_rows=MAX_BATCH)
        except BatchFormatError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body",), "msg": str(exc)}]
            ) from exc
        result = await guard.observations.ingest_columns(batch)
        return IngestOut(accepted=result.accepted, duplicate=result.duplicate)
    if media_type.lower() not in ("application/json", ""):
        raise HTTPException(
            415, f"observations come as application/json or {CONTENT_TYPE}, not {media_type}"
        )
    # parsed and validated in one pass from the raw bytes (pydantic's JSON parser): about half
    # the CPU of decoding to Python objects first, on the busiest endpoint of the server
    try:
        body = ObservationBatchIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc
    inconsistent = [
        {"type": "value_error", "loc": ("body", "observations", index), "msg": problem}
        for index, observation in enumerate(body.observations)
        if (problem := observation.inconsistency()) is not None
    ]
    if inconsistent:
        raise RequestValidationError(inconsistent)
    result = await guard.observations.ingest(body.observations, batch_id=body.batch_id)
    return IngestOut(accepted=result.accepted, duplicate=result.duplicate)
