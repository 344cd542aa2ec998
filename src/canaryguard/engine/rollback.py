"""The rollback manager: immediate rollback to the state before the canary, or to any snapshot.

One transaction writes the pre-rollback snapshot, the restored deployment (a new revision), the
rollback record, its events and its audit record. If anything in it fails, the transaction is
undone as a whole and a second, small transaction records the failure (``RollbackFailed``), so a
failed rollback is on record and never half-applied.
"""

from __future__ import annotations

import logging

from canaryguard.domain import rollout
from canaryguard.domain.errors import (
    CanaryGuardError,
    Conflict,
    IllegalTransition,
    IntegrityError,
    InvalidInput,
    NotFound,
    RollbackFailedError,
)
from canaryguard.domain.events import (
    AutoRollbackTriggered,
    ManualRollbackInitiated,
    RollbackCompleted,
    RollbackFailed,
)
from canaryguard.domain.models import (
    Deployment,
    MetricsSummary,
    RollbackKind,
    RollbackMetrics,
    RollbackMode,
    RollbackRecord,
    RollbackStatus,
    SnapshotKind,
)
from canaryguard.domain.states import Action, check_transition
from canaryguard.engine.snapshots import SnapshotService, metrics_summary
from canaryguard.engine.unit import Ports, Unit, check_text, load_for_write, new_id, unit_of_work

__all__ = ["RollbackManager"]

log = logging.getLogger(__name__)

# Refusals: the request itself is wrong; nothing was attempted, so nothing is recorded.
_REFUSALS = (InvalidInput, NotFound, Conflict, IllegalTransition)


class RollbackManager:
    """Executes and records rollbacks; keeps the spec's rollback metrics."""

    def __init__(self, ports: Ports, snapshots: SnapshotService) -> None:
        self._ports = ports
        self._snapshots = snapshots

    async def rollback(
        self,
        deployment: str,
        *,
        reason: str,
        actor: str,
        to: str | None = None,
        kind: RollbackKind = RollbackKind.MANUAL,
        trigger_metrics: MetricsSummary | None = None,
        expected_revision: int | None = None,
    ) -> RollbackRecord:
        """Roll ``deployment`` back now, to snapshot ``to`` or to the state before its canary.

        Raises a refusal (``NotFound``, ``InvalidInput``, ``Conflict``, ``IllegalTransition``)
        when the request is wrong, and ``RollbackFailedError`` when it could not be applied; the
        failure is then recorded with its reason.
        """
        reason = check_text(reason, "the reason", required=True)
        rollback_id = new_id("rb")
        started = self._ports.clock.monotonic()
        target_id = to
        revision_before = 0
        try:
            async with unit_of_work(self._ports, actor) as unit:
                current = await load_for_write(unit.tx, deployment, expected_revision)
                revision_before = current.revision
                check_transition(current.state, Action.ROLLBACK)
                target_id = to or current.baseline_snapshot_id
                if target_id is None:
                    raise InvalidInput(
                        f"{deployment} has no canary to roll back; name a snapshot to return to"
                    )
                open_ones = await unit.tx.rollbacks.open_for(deployment)
                if open_ones:
                    raise Conflict(f"rollback {open_ones[0].id} of {deployment} is still open")
                record = await self._execute(
                    unit,
                    current,
                    rollback_id=rollback_id,
                    target_id=target_id,
                    reason=reason,
                    kind=kind,
                    trigger_metrics=trigger_metrics,
                    started=started,
                )
        except _REFUSALS:
            raise
        except Exception as exc:
            await self._record_failure(
                deployment,
                rollback_id=rollback_id,
                target_id=target_id,
                reason=reason,
                actor=actor,
                kind=kind,
                revision_before=revision_before,
                started=started,
                error=exc,
            )
            raise RollbackFailedError(
                f"rollback {rollback_id} of {deployment} failed and changed nothing: {exc}",
                rollback_id=rollback_id,
            ) from exc
        return record

    async def _execute(
        self,
        unit: Unit,
        current: Deployment,
        *,
        rollback_id: str,
        target_id: str,
        reason: str,
        kind: RollbackKind,
        trigger_metrics: MetricsSummary | None,
        started: float,
    ) -> RollbackRecord:
        tx = unit.tx
        sealed = await tx.snapshots.get(target_id)
        if sealed is None:
            raise NotFound(f"no snapshot {target_id!r}")
        if sealed.info.deployment != current.name:
            raise InvalidInput(
                f"snapshot {target_id} belongs to {sealed.info.deployment}, not {current.name}"
            )
        target = self._snapshots.unseal(sealed)
        for document in (target.stable, target.canary):
            # the restored deployment refers to these versions: they must be in the store as saved
            if (
                document is not None
                and await self._snapshots.documents.get(tx, document.ref) != document
            ):
                raise IntegrityError(
                    f"policy {document.ref} of snapshot {target_id} differs from the store"
                )
        metrics = trigger_metrics or await metrics_summary(tx, current, unit.now)
        pre = await self._snapshots.capture(
            unit,
            current,
            kind=SnapshotKind.BEFORE_ROLLBACK,
            note=f"before rollback {rollback_id}: {reason}",
            protect={target_id},
            metrics=metrics,
        )
        restored = rollout.restore(current, target, reason=reason, now=unit.now)
        await tx.deployments.update(restored, expected_revision=current.revision)
        if kind is RollbackKind.AUTO:
            await unit.emit(
                AutoRollbackTriggered(
                    rollback_id=rollback_id, reason=reason, snapshot_id=pre.id, metrics=metrics
                ),
                deployment=current.name,
                revision=current.revision,
            )
        else:
            await unit.emit(
                ManualRollbackInitiated(
                    rollback_id=rollback_id,
                    initiated_by=unit.actor,
                    target_snapshot_id=target_id,
                    reason=reason,
                ),
                deployment=current.name,
                revision=current.revision,
            )
        duration_ms = (self._ports.clock.monotonic() - started) * 1000
        await unit.emit(
            RollbackCompleted(
                rollback_id=rollback_id,
                snapshot_id=pre.id,
                duration_ms=duration_ms,
                success=True,
                final_state=restored.state,
            ),
            deployment=current.name,
            revision=restored.revision,
        )
        record = RollbackRecord(
            id=rollback_id,
            deployment=current.name,
            kind=kind,
            mode=RollbackMode.IMMEDIATE,
            status=RollbackStatus.COMPLETED,
            target_snapshot_id=target_id,
            pre_snapshot_id=pre.id,
            reason=reason,
            actor=unit.actor,
            created_at=unit.now,
            started_at=unit.now,
            finished_at=unit.now,
            duration_ms=duration_ms,
            revision_before=current.revision,
            revision_after=restored.revision,
            partial_completion=1.0,
            trigger_metrics=metrics,
        )
        await tx.rollbacks.insert(record)
        await unit.audit(
            "rollback.execute",
            deployment=current.name,
            reason=reason,
            revision_before=current.revision,
            revision_after=restored.revision,
            details={
                "rollback_id": rollback_id,
                "kind": kind.value,
                "mode": RollbackMode.IMMEDIATE.value,
                "target_snapshot_id": target_id,
                "pre_snapshot_id": pre.id,
                "final_state": restored.state.value,
            },
        )
        return record

    async def _record_failure(
        self,
        deployment: str,
        *,
        rollback_id: str,
        target_id: str | None,
        reason: str,
        actor: str,
        kind: RollbackKind,
        revision_before: int,
        started: float,
        error: Exception,
    ) -> None:
        message = (
            str(error)
            if isinstance(error, CanaryGuardError)
            else f"{type(error).__name__}: {error}"
        )
        try:
            async with unit_of_work(self._ports, actor) as unit:
                duration_ms = (self._ports.clock.monotonic() - started) * 1000
                record = RollbackRecord(
                    id=rollback_id,
                    deployment=deployment,
                    kind=kind,
                    mode=RollbackMode.IMMEDIATE,
                    status=RollbackStatus.FAILED,
                    target_snapshot_id=target_id or "",
                    reason=reason,
                    actor=unit.actor,
                    created_at=unit.now,
                    started_at=unit.now,
                    finished_at=unit.now,
                    duration_ms=duration_ms,
                    revision_before=revision_before,
                    error=message,
                    partial_completion=0.0,
                )
                await unit.tx.rollbacks.insert(record)
                await unit.emit(
                    RollbackFailed(
                        rollback_id=rollback_id,
                        snapshot_id=target_id or "",
                        error=message,
                        partial_completion=0.0,
                    ),
                    deployment=deployment,
                    revision=revision_before or None,
                )
                await unit.audit(
                    "rollback.failed",
                    deployment=deployment,
                    reason=reason,
                    revision_before=revision_before or None,
                    details={
                        "rollback_id": rollback_id,
                        "error": message,
                        "target_snapshot_id": target_id,
                    },
                )
        except Exception:
            # the store itself is failing; the caller still gets the original error
            log.exception(
                "could not record the failure of rollback %s of %s", rollback_id, deployment
            )

    async def get(self, rollback_id: str) -> RollbackRecord:
        async with self._ports.store.read() as tx:
            record = await tx.rollbacks.get(rollback_id)
        if record is None:
            raise NotFound(f"no rollback {rollback_id!r}")
        return record

    async def list(
        self, *, deployment: str | None = None, limit: int = 100
    ) -> list[RollbackRecord]:
        if not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
        async with self._ports.store.read() as tx:
            return await tx.rollbacks.find(deployment=deployment, limit=limit)

    async def counts(self) -> dict[tuple[RollbackKind, RollbackStatus], int]:
        """How many rollbacks there are of each kind and status (for /metrics)."""
        async with self._ports.store.read() as tx:
            return await tx.rollbacks.counts()

    async def metrics(self, *, deployment: str | None = None) -> RollbackMetrics:
        """The spec's rollback metrics for one deployment, or for all when none is named."""
        async with self._ports.store.read() as tx:
            return await tx.rollbacks.metrics(deployment=deployment)
