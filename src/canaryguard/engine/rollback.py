"""The rollback manager: immediate rollback to the state before the canary, or to any snapshot.

One transaction writes the pre-rollback snapshot, the restored deployment (a new revision), the
rollback record, its events and its audit record. If anything in it fails, the transaction is
undone as a whole and a second, small transaction records the failure (``RollbackFailed``), so a
failed rollback is on record and never half-applied.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from canaryguard.domain import rollout
from canaryguard.domain.errors import (
    CanaryGuardError,
    Conflict,
    IllegalTransition,
    IntegrityError,
    InvalidInput,
    NotAllowed,
    NotFound,
    RollbackFailedError,
)
from canaryguard.domain.events import (
    AutoRollbackTriggered,
    ManualRollbackInitiated,
    RollbackCancelled,
    RollbackCompleted,
    RollbackFailed,
)
from canaryguard.domain.models import (
    Deployment,
    MetricsSnapshot,
    RollbackKind,
    RollbackMetrics,
    RollbackMode,
    RollbackRecord,
    RollbackStatus,
    Snapshot,
    SnapshotKind,
)
from canaryguard.domain.states import Action, check_transition
from canaryguard.engine.observations import metrics_snapshot
from canaryguard.engine.snapshots import SnapshotService
from canaryguard.engine.unit import Ports, Unit, check_text, load_for_write, new_id, unit_of_work

__all__ = ["Attempt", "RollbackManager", "carried", "save"]

log = logging.getLogger(__name__)

# Refusals: the request itself is wrong; nothing was attempted, so nothing is recorded.
_REFUSALS = (InvalidInput, NotFound, Conflict, IllegalTransition)


def carried(pending: RollbackRecord | None, unit: Unit) -> dict[str, Any]:
    """The fields a rollback record takes from the confirmed request it carries out (its
    initiator, when it was asked for, its deadline, and who confirmed it), or from ``unit``."""
    if pending is None:
        return {"actor": unit.actor, "created_at": unit.now}
    return {
        "actor": pending.actor,
        "created_at": pending.created_at,
        "expires_at": pending.expires_at,
        "confirmed_by": unit.actor,
    }


@dataclass
class Attempt:
    """A rollback being tried: what its failure record says if it fails. The attempt fills in
    ``target_id`` and ``revision_before`` as it learns them."""

    deployment: str
    rollback_id: str
    reason: str
    actor: str
    kind: RollbackKind
    started: float  # the clock's monotonic reading at the start (for the duration)
    mode: RollbackMode = RollbackMode.IMMEDIATE
    target_id: str | None = None
    revision_before: int = 0
    pending: RollbackRecord | None = None  # the confirmed request it carries out


async def save(unit: Unit, record: RollbackRecord, pending: RollbackRecord | None) -> None:
    """Insert ``record``, or update the request it carries out."""
    if pending is None:
        await unit.tx.rollbacks.insert(record)
    else:
        await unit.tx.rollbacks.update(record)


class RollbackManager:
    """Executes and records rollbacks; keeps the spec's rollback metrics."""

    def __init__(self, ports: Ports, snapshots: SnapshotService) -> None:
        self._ports = ports
        self._snapshots = snapshots
        # set by the application: starts a confirmed staged rollback (the executor's job)
        self.staged: Callable[[RollbackRecord, str], Awaitable[RollbackRecord]] | None = None

    async def rollback(
        self,
        deployment: str,
        *,
        reason: str,
        actor: str,
        to: str | None = None,
        kind: RollbackKind = RollbackKind.MANUAL,
        trigger_metrics: MetricsSnapshot | None = None,
        expected_revision: int | None = None,
    ) -> RollbackRecord:
        """Roll ``deployment`` back now, to snapshot ``to`` or to the state before its canary.

        Raises a refusal (``NotFound``, ``InvalidInput``, ``Conflict``, ``IllegalTransition``)
        when the request is wrong, and ``RollbackFailedError`` when it could not be applied; the
        failure is then recorded with its reason.
        """
        reason = check_text(reason, "the reason", required=True)
        attempt = Attempt(
            deployment, new_id("rb"), reason, actor, kind, self._ports.clock.monotonic()
        )
        async with self.recorded(attempt), unit_of_work(self._ports, actor) as unit:
            current, target_id = await self.load_target(
                unit, attempt, Action.ROLLBACK, to=to, expected_revision=expected_revision
            )
            await self._refuse_if_open(unit, deployment)
            if kind is RollbackKind.MANUAL and current.config.require_second_person:
                raise NotAllowed(
                    f"{deployment} requires a second person to confirm a manual rollback: "
                    "start it unconfirmed and let another operator confirm it"
                )
            return await self._execute(
                unit,
                current,
                rollback_id=attempt.rollback_id,
                target_id=target_id,
                reason=reason,
                kind=kind,
                trigger_metrics=trigger_metrics,
                started=attempt.started,
            )

    @staticmethod
    async def load_target(
        unit: Unit,
        attempt: Attempt,
        action: Action,
        *,
        to: str | None,
        expected_revision: int | None,
    ) -> tuple[Deployment, str]:
        """The deployment ``attempt`` rolls back (at ``expected_revision`` when given, in a state
        that allows ``action``) and the snapshot it returns to: ``to``, else the one from before
        its canary. Both are noted on ``attempt`` for its failure record."""
        current = await load_for_write(unit.tx, attempt.deployment, expected_revision)
        attempt.revision_before = current.revision
        check_transition(current.state, action)
        target_id = to or current.baseline_snapshot_id
        if target_id is None:
            raise InvalidInput(
                f"{attempt.deployment} has no canary to roll back; name a snapshot to return to"
            )
        attempt.target_id = target_id
        return current, target_id

    @contextlib.asynccontextmanager
    async def recorded(self, attempt: Attempt) -> AsyncIterator[Attempt]:
        """Run a rollback attempt: a refusal (the request is wrong, nothing was tried) passes
        through unrecorded; any other failure is recorded (a failed rollback record, its
        ``RollbackFailed`` event and audit record) and raised as ``RollbackFailedError``."""
        try:
            yield attempt
        except (*_REFUSALS, NotAllowed):
            raise
        except Exception as exc:
            await self._record_failure(attempt, exc)
            what = "staged rollback" if attempt.mode is RollbackMode.STAGED else "rollback"
            raise RollbackFailedError(
                f"{what} {attempt.rollback_id} of {attempt.deployment} failed and changed "
                f"nothing: {exc}",
                rollback_id=attempt.rollback_id,
            ) from exc

    async def _execute(
        self,
        unit: Unit,
        current: Deployment,
        *,
        rollback_id: str,
        target_id: str,
        reason: str,
        kind: RollbackKind,
        trigger_metrics: MetricsSnapshot | None,
        started: float,
        pending: RollbackRecord | None = None,
    ) -> RollbackRecord:
        """Apply the rollback in ``unit``; ``pending``: the confirmed request it carries out
        (announced when it was requested, so only its completion is announced now)."""
        tx = unit.tx
        target = await self.target(unit, current, target_id)
        metrics, pre = await self.begin(
            unit,
            current,
            rollback_id=rollback_id,
            target_id=target_id,
            reason=reason,
            kind=kind,
            trigger_metrics=trigger_metrics,
            announce=pending is None,
        )
        restored = rollout.restore(current, target, reason=reason, now=unit.now, run=pre.id)
        await tx.deployments.update(restored, expected_revision=current.revision)
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
            started_at=unit.now,
            finished_at=unit.now,
            duration_ms=duration_ms,
            revision_before=current.revision,
            revision_after=restored.revision,
            partial_completion=1.0,
            trigger_metrics=metrics,
            **carried(pending, unit),
        )
        await save(unit, record, pending)
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

    async def target(self, unit: Unit, current: Deployment, target_id: str) -> Snapshot:
        """The snapshot to return to, opened and checked against the policy store."""
        sealed = await unit.tx.snapshots.get(target_id)
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
                and await self._snapshots.documents.get(unit.tx, document.ref) != document
            ):
                raise IntegrityError(
                    f"policy {document.ref} of snapshot {target_id} differs from the store"
                )
        baseline = target.baseline_snapshot_id
        if (
            target.canary is not None
            and baseline is not None
            and await unit.tx.snapshots.get(baseline) is None
        ):
            # the canary brought back could not be rolled back by default: what it returns
            # to, the state before that canary started, is gone
            raise InvalidInput(
                f"snapshot {target_id} brings back canary {target.canary.ref}, whose baseline "
                f"snapshot {baseline} (the state before it, which rolling it back returns to) "
                "was pruned by retention; roll back to a snapshot without a canary, or pin "
                "baselines you may want to return to"
            )
        return target

    async def begin(
        self,
        unit: Unit,
        current: Deployment,
        *,
        rollback_id: str,
        target_id: str,
        reason: str,
        kind: RollbackKind,
        trigger_metrics: MetricsSnapshot | None,
        announce: bool = True,
    ) -> tuple[MetricsSnapshot, Snapshot]:
        """What every rollback does first: the pre-rollback snapshot (which keeps the target),
        and its announcement (``AutoRollbackTriggered`` or ``ManualRollbackInitiated``)."""
        metrics = trigger_metrics or metrics_snapshot(self._ports.windows, current, unit.now)
        pre = await self._snapshots.capture(
            unit,
            current,
            kind=SnapshotKind.BEFORE_ROLLBACK,
            note=f"before rollback {rollback_id}: {reason}",
            protect={target_id},
            metrics=metrics,
        )
        if kind is RollbackKind.AUTO:
            await unit.emit(
                AutoRollbackTriggered(
                    rollback_id=rollback_id, reason=reason, snapshot_id=pre.id, metrics=metrics
                ),
                deployment=current.name,
                revision=current.revision,
            )
        elif announce:
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
        return metrics, pre

    async def _record_failure(self, attempt: Attempt, error: Exception) -> None:
        message = (
            str(error)
            if isinstance(error, CanaryGuardError)
            else f"{type(error).__name__}: {error}"
        )
        try:
            async with unit_of_work(self._ports, attempt.actor) as unit:
                duration_ms = (self._ports.clock.monotonic() - attempt.started) * 1000
                record = RollbackRecord(
                    id=attempt.rollback_id,
                    deployment=attempt.deployment,
                    kind=attempt.kind,
                    mode=attempt.mode,
                    status=RollbackStatus.FAILED,
                    target_snapshot_id=attempt.target_id or "",
                    reason=attempt.reason,
                    started_at=unit.now,
                    finished_at=unit.now,
                    duration_ms=duration_ms,
                    revision_before=attempt.revision_before,
                    error=message,
                    partial_completion=0.0,
                    **carried(attempt.pending, unit),
                )
                await save(unit, record, attempt.pending)
                await unit.emit(
                    RollbackFailed(
                        rollback_id=attempt.rollback_id,
                        snapshot_id=attempt.target_id or "",
                        error=message,
                        partial_completion=0.0,
                    ),
                    deployment=attempt.deployment,
                    revision=attempt.revision_before or None,
                )
                await unit.audit(
                    "rollback.failed",
                    deployment=attempt.deployment,
                    reason=attempt.reason,
                    revision_before=attempt.revision_before or None,
                    details={
                        "rollback_id": attempt.rollback_id,
                        "error": message,
                        "target_snapshot_id": attempt.target_id,
                    },
                )
        except Exception:
            # the store itself is failing; the caller still gets the original error
            log.exception(
                "could not record the failure of rollback %s of %s",
                attempt.rollback_id,
                attempt.deployment,
            )

    async def request(
        self,
        deployment: str,
        *,
        reason: str,
        actor: str,
        to: str | None = None,
        expected_revision: int | None = None,
        staged: bool = False,
    ) -> RollbackRecord:
        """Start a manual rollback (``staged``: in stages) that waits for ``confirm`` until the
        deployment's ``confirmation_timeout_seconds`` have passed; nothing changes until then."""
        reason = check_text(reason, "the reason", required=True)
        async with unit_of_work(self._ports, actor) as unit:
            current = await load_for_write(unit.tx, deployment, expected_revision)
            check_transition(
                current.state, Action.BEGIN_STAGED_ROLLBACK if staged else Action.ROLLBACK
            )
            target_id = to or current.baseline_snapshot_id
            if target_id is None:
                raise InvalidInput(
                    f"{deployment} has no canary to roll back; name a snapshot to return to"
                )
            sealed = await unit.tx.snapshots.get(target_id)
            if sealed is None or sealed.info.deployment != deployment:
                raise NotFound(f"no snapshot {target_id!r} of {deployment}")
            await self._refuse_if_open(unit, deployment)
            record = RollbackRecord(
                id=new_id("rb"),
                deployment=deployment,
                kind=RollbackKind.MANUAL,
                mode=RollbackMode.STAGED if staged else RollbackMode.IMMEDIATE,
                status=RollbackStatus.PENDING,
                target_snapshot_id=target_id,
                reason=reason,
                actor=unit.actor,
                created_at=unit.now,
                revision_before=current.revision,
                expires_at=unit.now
                + timedelta(seconds=current.config.confirmation_timeout_seconds),
            )
            await unit.tx.rollbacks.insert(record)
            await unit.emit(
                ManualRollbackInitiated(
                    rollback_id=record.id,
                    initiated_by=unit.actor,
                    target_snapshot_id=target_id,
                    reason=reason,
                ),
                deployment=deployment,
                revision=current.revision,
            )
            await unit.audit(
                "rollback.request",
                deployment=deployment,
                reason=reason,
                revision_before=current.revision,
                details={"rollback_id": record.id, "target_snapshot_id": target_id},
            )
        return record

    @staticmethod
    async def _refuse_if_open(unit: Unit, deployment: str) -> None:
        open_ones = await unit.tx.rollbacks.open_for(deployment)
        if open_ones:
            way_out = (
                "confirm or cancel it first"
                if open_ones[0].status is RollbackStatus.PENDING
                else "wait for it, or escalate it to an immediate rollback"
            )
            raise Conflict(
                f"rollback {open_ones[0].id} of {deployment} is still open "
                f"({open_ones[0].status.value}): {way_out}"
            )

    async def confirm(self, rollback_id: str, *, actor: str) -> RollbackRecord:
        """Carry out a pending rollback. Refused when it expired (it is then recorded as
        expired), and, with ``require_second_person``, when ``actor`` started it."""
        pending = await self.get(rollback_id)
        self._check_pending(pending)
        if self._ports.clock.now() >= (pending.expires_at or pending.created_at):
            await self.expire_due()
            raise Conflict(f"rollback {rollback_id} expired unconfirmed; start a new one")
        if self.staged is not None and pending.mode is RollbackMode.STAGED:
            await self._check_second_person(pending, actor)
            return await self.staged(pending, actor)
        attempt = Attempt(
            pending.deployment,
            rollback_id,
            pending.reason,
            actor,
            RollbackKind.MANUAL,
            self._ports.clock.monotonic(),
            target_id=pending.target_snapshot_id,
            revision_before=pending.revision_before,
            pending=pending,
        )
        async with self.recorded(attempt), unit_of_work(self._ports, actor) as unit:
            fresh = await unit.tx.rollbacks.get(rollback_id)
            if fresh is None or fresh.status is not RollbackStatus.PENDING:
                raise Conflict(f"rollback {rollback_id} is no longer pending")
            current = await load_for_write(unit.tx, pending.deployment, None)
            if current.config.require_second_person and actor == pending.actor:
                raise NotAllowed(
                    f"rollback {rollback_id} needs a second person: {actor} started it"
                )
            check_transition(current.state, Action.ROLLBACK)
            return await self._execute(
                unit,
                current,
                rollback_id=rollback_id,
                target_id=pending.target_snapshot_id,
                reason=pending.reason,
                kind=RollbackKind.MANUAL,
                trigger_metrics=None,
                started=attempt.started,
                pending=pending,
            )

    async def _check_second_person(self, pending: RollbackRecord, actor: str) -> None:
        async with self._ports.store.read() as tx:
            current = await tx.deployments.get(pending.deployment)
        if current is not None and current.config.require_second_person and actor == pending.actor:
            raise NotAllowed(f"rollback {pending.id} needs a second person: {actor} started it")

    async def cancel(self, rollback_id: str, *, actor: str) -> RollbackRecord:
        """Drop a pending rollback; nothing changes."""
        pending = await self.get(rollback_id)
        self._check_pending(pending)
        return await self._close(pending, RollbackStatus.CANCELLED, actor=actor)

    async def expire_due(self) -> list[RollbackRecord]:
        """Record every pending rollback past its deadline as expired (called each tick)."""
        now = self._ports.clock.now()
        async with self._ports.store.read() as tx:
            pending = await tx.rollbacks.pending()
        expired = []
        for record in pending:
            if record.expires_at is not None and now >= record.expires_at:
                with contextlib.suppress(Conflict):  # confirmed or cancelled meanwhile
                    expired.append(
                        await self._close(record, RollbackStatus.EXPIRED, actor="canaryguard")
                    )
        return expired

    @staticmethod
    def _check_pending(record: RollbackRecord) -> None:
        if record.status is not RollbackStatus.PENDING:
            raise Conflict(f"rollback {record.id} is {record.status.value}, not pending")

    async def _close(
        self, pending: RollbackRecord, status: RollbackStatus, *, actor: str
    ) -> RollbackRecord:
        async with unit_of_work(self._ports, actor) as unit:
            fresh = await unit.tx.rollbacks.get(pending.id)
            if fresh is None or fresh.status is not RollbackStatus.PENDING:
                raise Conflict(f"rollback {pending.id} is no longer pending")
            closed = fresh.model_copy(
                update={
                    "status": status,
                    "finished_at": unit.now,
                    "cancelled_by": actor if status is RollbackStatus.CANCELLED else None,
                }
            )
            await unit.tx.rollbacks.update(closed)
            current = await unit.tx.deployments.get(pending.deployment)
            await unit.emit(
                RollbackCancelled(
                    rollback_id=pending.id,
                    status="expired" if status is RollbackStatus.EXPIRED else "cancelled",
                    closed_by=actor,
                    reason=pending.reason,
                ),
                deployment=pending.deployment,
                revision=None if current is None else current.revision,
            )
            await unit.audit(
                f"rollback.{status.value}",
                deployment=pending.deployment,
                reason=pending.reason,
                details={"rollback_id": pending.id},
            )
        return closed

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

    async def counts_by_deployment(self) -> dict[tuple[str, RollbackKind, RollbackStatus], int]:
        """How many rollbacks each deployment has of each kind and status (for /metrics)."""
        async with self._ports.store.read() as tx:
            return await tx.rollbacks.counts_by_deployment()

    async def metrics(self, *, deployment: str | None = None) -> RollbackMetrics:
        """The spec's rollback metrics for one deployment, or for all when none is named."""
        async with self._ports.store.read() as tx:
            return await tx.rollbacks.metrics(deployment=deployment)
