"""Snapshots, rollbacks and the audit log, addressed by their own ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from canaryguard.api.auth import caller, get_guard, guarded
from canaryguard.api.schemas import MAX_SEQ, ChangeOut, EscalateIn, PinIn, VerifyOut
from canaryguard.domain.access import Access, ApiToken
from canaryguard.domain.models import (
    AuditRecord,
    RollbackMetrics,
    RollbackRecord,
    Snapshot,
    SnapshotInfo,
)
from canaryguard.engine.app import CanaryGuard

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Guard = Annotated[CanaryGuard, Depends(get_guard)]
Caller = Annotated[ApiToken, Depends(caller)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


@guarded(
    router,
    "GET",
    "/snapshots/{snapshot_id}",
    Access.READ,
    response_model=Snapshot,
    tags=["snapshots"],
)
async def show_snapshot(snapshot_id: str, guard: Guard) -> Snapshot:
    """The snapshot in full, decrypted: both policy documents, split, state, metrics."""
    return await guard.snapshots.get(snapshot_id)


@guarded(
    router,
    "POST",
    "/snapshots/{snapshot_id}/pin",
    Access.OPERATE,
    response_model=SnapshotInfo,
    tags=["snapshots"],
)
async def pin_snapshot(snapshot_id: str, body: PinIn, guard: Guard, who: Caller) -> SnapshotInfo:
    """Pin (retention never drops it) or unpin."""
    return await guard.snapshots.set_pinned(snapshot_id, pinned=body.pinned, actor=who.name)


@guarded(
    router,
    "GET",
    "/snapshots/{old_id}/diff/{new_id}",
    Access.READ,
    response_model=list[ChangeOut],
    tags=["snapshots"],
)
async def diff_snapshots(old_id: str, new_id: str, guard: Guard) -> list[ChangeOut]:
    return [
        ChangeOut.model_validate(c, from_attributes=True)
        for c in await guard.snapshots.diff(old_id, new_id)
    ]


@guarded(
    router,
    "GET",
    "/rollbacks",
    Access.READ,
    response_model=list[RollbackRecord],
    tags=["rollbacks"],
)
async def list_rollbacks(
    guard: Guard, deployment: str | None = None, limit: Limit = 100
) -> list[RollbackRecord]:
    return await guard.rollbacks.list(deployment=deployment, limit=limit)


@guarded(
    router,
    "GET",
    "/rollbacks/metrics",
    Access.READ,
    response_model=RollbackMetrics,
    tags=["rollbacks"],
)
async def rollback_metrics(guard: Guard) -> RollbackMetrics:
    """The spec's rollback metrics over every deployment."""
    return await guard.rollbacks.metrics()


@guarded(
    router,
    "GET",
    "/rollbacks/{rollback_id}",
    Access.READ,
    response_model=RollbackRecord,
    tags=["rollbacks"],
)
async def show_rollback(rollback_id: str, guard: Guard) -> RollbackRecord:
    return await guard.rollbacks.get(rollback_id)


@guarded(
    router,
    "POST",
    "/rollbacks/{rollback_id}/confirm",
    Access.OPERATE,
    response_model=RollbackRecord,
    tags=["rollbacks"],
    responses={
        403: {"description": "the deployment needs a second person, and you started it"},
        409: {"description": "not pending (confirmed, cancelled or expired)"},
        500: {"description": "the rollback failed; nothing changed; it is recorded"},
    },
)
async def confirm_rollback(rollback_id: str, guard: Guard, who: Caller) -> RollbackRecord:
    """Carry out a pending manual rollback before it expires."""
    return await guard.rollbacks.confirm(rollback_id, actor=who.name)


@guarded(
    router,
    "POST",
    "/rollbacks/{rollback_id}/escalate",
    Access.OPERATE,
    response_model=RollbackRecord,
    tags=["rollbacks"],
    responses={409: {"description": "not a running staged rollback"}},
)
async def escalate_rollback(
    rollback_id: str, body: EscalateIn, guard: Guard, who: Caller
) -> RollbackRecord:
    """Replace a running staged rollback with an immediate one: the target restored now."""
    return await guard.executor.replace_with_immediate(
        rollback_id, reason=body.reason, actor=who.name
    )


@guarded(
    router,
    "POST",
    "/rollbacks/{rollback_id}/cancel",
    Access.OPERATE,
    response_model=RollbackRecord,
    tags=["rollbacks"],
    responses={409: {"description": "not pending (confirmed, cancelled or expired)"}},
)
async def cancel_rollback(rollback_id: str, guard: Guard, who: Caller) -> RollbackRecord:
    """Drop a pending manual rollback; nothing changes."""
    return await guard.rollbacks.cancel(rollback_id, actor=who.name)


@guarded(router, "GET", "/audit", Access.READ, response_model=list[AuditRecord], tags=["audit"])
async def list_audit(
    guard: Guard,
    deployment: str | None = None,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Limit = 100,
) -> list[AuditRecord]:
    """Audit records after sequence number ``after``, oldest first."""
    return await guard.audit.list(deployment=deployment, after_seq=after, limit=limit)


@guarded(router, "GET", "/audit/verify", Access.READ, response_model=VerifyOut, tags=["audit"])
async def verify_audit(guard: Guard) -> VerifyOut:
    """Walk the hash chain; names the first record changed, removed or moved."""
    verdict = await guard.audit.verify()
    return VerifyOut(
        ok=verdict.ok,
        checked=verdict.checked,
        first_bad_seq=verdict.first_bad_seq,
        problem=verdict.problem,
    )
