"""One error shape for every error: RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from canaryguard.domain.errors import (
    AlreadyExists,
    CanaryGuardError,
    Conflict,
    IllegalTransition,
    IntegrityError,
    InvalidInput,
    NotAllowed,
    NotFound,
    RollbackFailedError,
    SchemaViolation,
    Unavailable,
)

__all__ = [
    "PROBLEM_TYPE_BASE",
    "PreconditionFailed",
    "Problem",
    "install_problem_handlers",
    "problem",
]

PROBLEM_TYPE_BASE = "https://canaryguard.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` lists what is wrong field by field when known."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    current_revision: int | None = None
    rollback_id: str | None = None


class PreconditionFailed(Exception):
    """An ``If-Match`` revision that is not the current one (HTTP 412)."""

    def __init__(self, conflict: Conflict) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


def problem(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    body = Problem(
        type=PROBLEM_TYPE_BASE + kind,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        **extra,
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else None
    return _AsciiJSON(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


class _AsciiJSON(JSONResponse):
    """JSON with every non-ASCII character escaped: an error may quote the bad input, and input
    can hold text UTF-8 cannot encode (a lone surrogate), which must not turn a 400 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


_STATUS: list[tuple[type[CanaryGuardError], int, str]] = [
    (SchemaViolation, 422, "schema-violation"),
    (InvalidInput, 400, "invalid-input"),
    (NotFound, 404, "not-found"),
    (NotAllowed, 403, "not-allowed"),
    (AlreadyExists, 409, "already-exists"),
    (Conflict, 409, "conflict"),
    (IllegalTransition, 409, "illegal-transition"),
    (IntegrityError, 500, "integrity"),
    (RollbackFailedError, 500, "rollback-failed"),
    (Unavailable, 503, "unavailable"),
]


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            extra: dict[str, Any] = {}
            if isinstance(exc, SchemaViolation):
                extra["errors"] = [{"path": path, "message": msg} for path, msg in exc.problems]
            if isinstance(exc, Conflict):
                extra["current_revision"] = exc.current_revision
            if isinstance(exc, RollbackFailedError):
                extra["rollback_id"] = exc.rollback_id
            return problem(status, kind, str(exc), **extra)
    return problem(500, "error", str(exc))


async def _precondition_failed(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PreconditionFailed)  # noqa: S101 - registered for this type only
    return problem(
        412, "precondition-failed", str(exc), current_revision=exc.conflict.current_revision
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = [
        {"path": "/".join(str(p) for p in error["loc"]), "message": error["msg"]}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
    return problem(422, "invalid-request", f"the request is not valid: {detail}", errors=errors)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    kinds = {
        401: "unauthorized",
        403: "forbidden",
        404: "not-found",
        405: "method-not-allowed",
        413: "too-large",
        415: "unsupported-media-type",
    }
    response = problem(exc.status_code, kinds.get(exc.status_code, "http"), str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    return problem(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CanaryGuardError, _domain_error)
    app.add_exception_handler(PreconditionFailed, _precondition_failed)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
