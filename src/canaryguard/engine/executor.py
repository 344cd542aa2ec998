"""The rollback executor: staged rollbacks, one persisted step at a time, resumed after a crash.

Starting a staged rollback is one transaction: the pre-rollback snapshot, the plan (the
configured stages below the current canary share), the record (``running``), the deployment in
``rolling_back`` (which refuses every other change), its announcement and audit record. Then
each step is one transaction of its own that re-reads the record, applies the next stage (a new
split, or at the last stage the target snapshot restored exactly), marks that stage done with
the revision it made, emits ``RollbackProgress`` and is audited. A stage's change and its
"done" mark commit together, and a step only applies the stage after the last one marked done,
so after a crash (``kill -9`` included) the executor resumes every running rollback from its
last step and each stage takes effect exactly once.

Between stages, with ``evaluate_between_stages``, the stage's success criteria are checked on
the stable side over the time since the stage took effect. A failed step is retried with
backoff; after ``MAX_ATTEMPTS`` the rollback fails (``RollbackFailed`` with the share of stages
done) and the deployment is left ``failed`` with its split as the last stage set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from canaryguard.domain import rollout
from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import (
    CanaryGuardError,
    Conflict,
    NotAllowed,
    NotFound,
    NotLeader,
    RollbackFailedError,
)
from canaryguard.domain.events import RollbackCompleted, RollbackFailed, RollbackProgress
from canaryguard.domain.judge import variant_metrics
from canaryguard.domain.models import (
    Deployment,
    MetricsSnapshot,
    RollbackKind,
    RollbackMode,
    RollbackRecord,
    RollbackStatus,
    StagedRollbackConfig,
    StageProgress,
    SuccessCriterion,
    VariantMetrics,
)
from canaryguard.domain.states import Action
from canaryguard.engine.leadership import Leadership
from canaryguard.engine.rollback import Attempt, RollbackManager, carried, save
from canaryguard.engine.unit import Ports, Unit, check_text, new_id, unit_of_work

__all__ = ["EXECUTOR_ACTOR", "MAX_ATTEMPTS", "RollbackExecutor", "plan"]

log = logging.getLogger(__name__)

EXECUTOR_ACTOR = "canaryguard-executor"
MAX_ATTEMPTS = 5  # tries of one step before the rollback fails


def plan(config: StagedRollbackConfig, canary_percent: float) -> tuple[StageProgress, ...]:
    """The stages a rollback from ``canary_percent`` walks: those below the current share (the
    last, to 0 %, always)."""
    return tuple(
        StageProgress(
            name=stage.name,
            target_percentage=stage.target_percentage,
            max_duration_seconds=stage.max_duration_seconds,
            success_criteria=stage.success_criteria,
        )
        for stage in config.stages
        if stage.target_percentage < canary_percent or stage.target_percentage == 0
    )


def _failed_criteria(criteria: tuple[SuccessCriterion, ...], stable: VariantMetrics) -> str | None:
    values = {
        "error_rate": stable.error_rate,
        "mean_latency_ms": stable.mean_latency_ms,
        "max_latency_ms": stable.latency_max_ms,
    }
    for criterion in criteria:
        value = values[criterion.metric]
        if value > criterion.max_value:
            return f"stable {criterion.metric} {value:.4g} > {criterion.max_value:g}"
    return None


class RollbackExecutor:
    """Starts staged rollbacks and carries their steps out; see the module docstring."""

    def __init__(self, ports: Ports, manager: RollbackManager) -> None:
        self._ports = ports
        self._manager = manager
        self._wake = asyncio.Event()
        # with several replicas, only the holder of the controller lease takes steps (the
        # monitor's tick renews the lease)
        self.leadership: Leadership | None = None

    async def start(
        self,
        deployment: str,
        *,
        reason: str,
        actor: str,
        to: str | None = None,
        kind: RollbackKind = RollbackKind.MANUAL,
        trigger_metrics: MetricsSnapshot | None = None,
        expected_revision: int | None = None,
        pending: RollbackRecord | None = None,
    ) -> RollbackRecord:
        """Begin a staged rollback of ``deployment`` to ``to`` (default: before its canary);
        ``pending``: the confirmed request it carries out (its id and initiator are kept)."""
        reason = check_text(reason, "the reason", required=True)
        attempt = Attempt(
            deployment,
            new_id("rb") if pending is None else pending.id,
            reason,
            actor,
            kind,
            self._ports.clock.monotonic(),
            mode=RollbackMode.STAGED,
            target_id=to,
            pending=pending,
        )
        # a start that fails for any reason but a refusal (its target does not open, say) is
        # recorded as a failed rollback, as an immediate one is
        async with self._manager.recorded(attempt), unit_of_work(self._ports, actor) as unit:
            current, target_id = await self._manager.load_target(
                unit,
                attempt,
                Action.BEGIN_STAGED_ROLLBACK,
                to=to,
                expected_revision=expected_revision,
            )
            if (
                pending is None
                and kind is RollbackKind.MANUAL
                and (current.config.require_second_person)
            ):
                raise NotAllowed(
                    f"{deployment} requires a second person to confirm a manual rollback: "
                    "start it unconfirmed and let another operator confirm it"
                )
            if pending is not None:
                fresh = await unit.tx.rollbacks.get(pending.id)
                if fresh is None or fresh.status is not RollbackStatus.PENDING:
                    raise Conflict(f"rollback {pending.id} is no longer pending")
            open_ones = [
                r
                for r in await unit.tx.rollbacks.open_for(deployment)
                if pending is None or r.id != pending.id
            ]
            if open_ones:
                raise Conflict(
                    f"rollback {open_ones[0].id} of {deployment} is still open "
                    f"({open_ones[0].status.value})"
                )
            record = await self._begin(
                unit,
                current,
                target_id,
                reason,
                kind,
                trigger_metrics,
                pending,
                attempt.rollback_id,
            )
        self._wake.set()
        return record

    async def _begin(  # noqa: PLR0917 - private; the one caller passes them in order
        self,
        unit: Unit,
        current: Deployment,
        target_id: str,
        reason: str,
        kind: RollbackKind,
        trigger_metrics: MetricsSnapshot | None,
        pending: RollbackRecord | None,
        rollback_id: str,
    ) -> RollbackRecord:
        await self._manager.target(unit, current, target_id)  # exists, opens, matches the store
        metrics, pre = await self._manager.begin(
            unit,
            current,
            rollback_id=rollback_id,
            target_id=target_id,
            reason=reason,
            kind=kind,
            trigger_metrics=trigger_metrics,
            announce=pending is None,
        )
        rolling = rollout.begin_staged_rollback(current, reason=reason, now=unit.now)
        await unit.tx.deployments.update(rolling, expected_revision=current.revision)
        stages = plan(current.config.staged_rollback, current.split.canary_percent)
        record = RollbackRecord(
            id=rollback_id,
            deployment=current.name,
            kind=kind,
            mode=RollbackMode.STAGED,
            status=RollbackStatus.RUNNING,
            target_snapshot_id=target_id,
            pre_snapshot_id=pre.id,
            reason=reason,
            started_at=unit.now,
            revision_before=current.revision,
            trigger_metrics=metrics,
            stages=stages,
            next_step_at=unit.now,
            **carried(pending, unit),
        )
        await save(unit, record, pending)
        await unit.audit(
            "rollback.staged_start",
            deployment=current.name,
            reason=reason,
            revision_before=current.revision,
            revision_after=rolling.revision,
            details={
                "rollback_id": rollback_id,
                "kind": kind.value,
                "target_snapshot_id": target_id,
                "pre_snapshot_id": pre.id,
                "stages": [f"{s.name}:{s.target_percentage:g}" for s in stages],
            },
        )
        return record

    # -- running the steps -------------------------------------------------------------------

    async def run(self, every: float = 1.0) -> None:
        """Take due steps until cancelled; wakes at once when a rollback starts."""
        while True:
            try:
                await self.step_due()
            except Exception:
                log.exception("rollback executor round failed")
            self._wake.clear()
            delay = await self._next_delay(every)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the wake-up does, and shutdown would then wait on this loop for ever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _next_delay(self, every: float) -> float:
        now = self._ports.clock.now()
        async with self._ports.store.read() as tx:
            running = await tx.rollbacks.running_staged()
        due = [r.next_step_at for r in running if r.next_step_at is not None]
        if not due:
            return every
        return max(0.0, min(every, (min(due) - now).total_seconds()))

    async def step_due(self) -> list[RollbackRecord]:
        """Take the next step of every running staged rollback whose step is due."""
        if self.leadership is not None and not self.leadership.is_leader:
            return []
        now = self._ports.clock.now()
        async with self._ports.store.read() as tx:
            running = await tx.rollbacks.running_staged()
        done = []
        for record in running:
            if record.next_step_at is None or record.next_step_at <= now:
                stepped = await self._step(record.id)
                if stepped is not None:
                    done.append(stepped)
        return done

    async def _step(self, rollback_id: str) -> RollbackRecord | None:
        try:
            async with unit_of_work(self._ports, EXECUTOR_ACTOR) as unit:
                record = await unit.tx.rollbacks.get(rollback_id)
                if record is None or record.status is not RollbackStatus.RUNNING:
                    return None  # finished, or replaced by an immediate rollback
                if record.next_step_at is not None and unit.now < record.next_step_at:
                    return None  # another executor took this step
                return await self._advance(unit, record)
        except NotLeader:
            return None  # the lease went to another replica: its executor takes the step
        except Exception as exc:
            return await self._step_failed(rollback_id, exc)

    async def _advance(self, unit: Unit, record: RollbackRecord) -> RollbackRecord:
        current = await unit.tx.deployments.get(record.deployment)
        if current is None:
            raise NotFound(f"no deployment named {record.deployment!r}")
        index = next(i for i, s in enumerate(record.stages) if s.applied_at is None)
        config = current.config.staged_rollback
        if (unit.now - (record.started_at or record.created_at)).total_seconds() > (
            config.total_timeout_seconds
        ):
            return await self._finish(unit, record, current, escalated="total timeout reached")
        if index > 0 and config.evaluate_between_stages:
            held = await self._check_stage(unit, record, index - 1, current, config)
            if held is not None:
                return held
        if index == len(record.stages) - 1:
            return await self._finish(unit, record, current)
        stage = record.stages[index]
        stepped = rollout.rollback_step(
            current,
            canary_basis_points=round(stage.target_percentage * 100),
            reason=f"rollback {record.id}: stage {stage.name}",
            now=unit.now,
        )
        await unit.tx.deployments.update(stepped, expected_revision=current.revision)
        return await self._mark(unit, record, index, stepped)

    async def _check_stage(
        self,
        unit: Unit,
        record: RollbackRecord,
        index: int,
        current: Deployment,
        config: StagedRollbackConfig,
    ) -> RollbackRecord | None:
        """None when the stage passed; else the record, held or escalated."""
        stage = record.stages[index]
        if not stage.success_criteria or stage.applied_at is None:
            return None
        # the stable side since this stage took effect: how it copes with the returning traffic
        until = int(unit.now.timestamp())
        totals = self._ports.windows.totals(
            current.name, since=int(stage.applied_at.timestamp()), until=until
        )
        stable = variant_metrics(totals.get(Variant.STABLE))
        failed = _failed_criteria(stage.success_criteria, stable)
        if failed is None:
            return None
        waited = (unit.now - stage.applied_at).total_seconds()
        if config.on_criteria_failure == "hold" and waited < stage.max_duration_seconds:
            held = record.model_copy(
                update={
                    "held": f"stage {stage.name}: {failed}",
                    "next_step_at": unit.now
                    + timedelta(seconds=max(1.0, config.stage_interval_seconds)),
                }
            )
            await unit.tx.rollbacks.update(held)
            if record.held is None:
                await unit.audit(
                    "rollback.hold",
                    deployment=record.deployment,
                    reason=f"stage {stage.name}: {failed}",
                    details={"rollback_id": record.id},
                )
            return held
        why = "stage timeout" if config.on_criteria_failure == "hold" else "criteria failed"
        return await self._finish(
            unit, record, current, escalated=f"{why}: stage {stage.name}: {failed}"
        )

    async def _mark(
        self, unit: Unit, record: RollbackRecord, index: int, deployment: Deployment
    ) -> RollbackRecord:
        stage = record.stages[index]
        stages = list(record.stages)
        stages[index] = stage.model_copy(
            update={"applied_at": unit.now, "revision": deployment.revision}
        )
        interval = deployment.config.staged_rollback.stage_interval_seconds
        updated = record.model_copy(
            update={
                "stages": tuple(stages),
                "next_step_at": unit.now + timedelta(seconds=interval),
                "step_attempts": 0,
                "held": None,
                "partial_completion": (index + 1) / len(stages),
            }
        )
        await unit.tx.rollbacks.update(updated)
        await unit.emit(
            RollbackProgress(
                rollback_id=record.id,
                snapshot_id=record.pre_snapshot_id or "",
                stage=stage.name,
                percentage=stage.target_percentage,
            ),
            deployment=record.deployment,
            revision=deployment.revision,
        )
        await unit.audit(
            "rollback.stage",
            deployment=record.deployment,
            reason=record.reason,
            revision_after=deployment.revision,
            details={
                "rollback_id": record.id,
                "stage": stage.name,
                "percentage": stage.target_percentage,
            },
        )
        return updated

    async def _finish(
        self,
        unit: Unit,
        record: RollbackRecord,
        current: Deployment,
        *,
        escalated: str | None = None,
    ) -> RollbackRecord:
        """The last stage: the target snapshot restored exactly; the rollback completed."""
        target = await self._manager.target(unit, current, record.target_snapshot_id)
        reason = record.reason if escalated is None else f"{record.reason} (escalated: {escalated})"
        # a canary brought back starts a new run here, not at the staged rollback's start (its
        # pre-rollback snapshot): no snapshot marks this moment, so the run is named for the
        # rollback, and the monitor takes its start from the state it finds (this one)
        run = f"{record.id}/restored"
        restored = rollout.restore(current, target, reason=reason, now=unit.now, run=run)
        await unit.tx.deployments.update(restored, expected_revision=current.revision)
        index = len(record.stages) - 1
        marked = await self._mark(unit, record, index, restored)
        started = record.started_at or record.created_at
        duration_ms = (unit.now - started).total_seconds() * 1000
        done = marked.model_copy(
            update={
                "status": RollbackStatus.COMPLETED,
                "finished_at": unit.now,
                "duration_ms": duration_ms,
                "revision_after": restored.revision,
                "partial_completion": 1.0,
                "next_step_at": None,
                "held": None,
                "error": None if escalated is None else f"escalated: {escalated}",
            }
        )
        await unit.tx.rollbacks.update(done)
        await unit.emit(
            RollbackCompleted(
                rollback_id=record.id,
                snapshot_id=record.pre_snapshot_id or "",
                duration_ms=duration_ms,
                success=True,
                final_state=restored.state,
            ),
            deployment=record.deployment,
            revision=restored.revision,
        )
        await unit.audit(
            "rollback.execute",
            deployment=record.deployment,
            reason=reason,
            revision_before=record.revision_before,
            revision_after=restored.revision,
            details={
                "rollback_id": record.id,
                "kind": record.kind.value,
                "mode": RollbackMode.STAGED.value,
                "target_snapshot_id": record.target_snapshot_id,
                "pre_snapshot_id": record.pre_snapshot_id,
                "final_state": restored.state.value,
                "escalated": escalated,
            },
        )
        return done

    async def _step_failed(self, rollback_id: str, error: Exception) -> RollbackRecord | None:
        """Back off and retry; after ``MAX_ATTEMPTS`` the rollback fails, stated everywhere."""
        message = (
            str(error)
            if isinstance(error, CanaryGuardError)
            else f"{type(error).__name__}: {error}"
        )
        log.warning("step of rollback %s failed: %s", rollback_id, message)
        try:
            async with unit_of_work(self._ports, EXECUTOR_ACTOR) as unit:
                record = await unit.tx.rollbacks.get(rollback_id)
                if record is None or record.status is not RollbackStatus.RUNNING:
                    return None
                attempts = record.step_attempts + 1
                if attempts < MAX_ATTEMPTS:
                    retried = record.model_copy(
                        update={
                            "step_attempts": attempts,
                            "error": message,
                            "next_step_at": unit.now + timedelta(seconds=2**attempts),
                        }
                    )
                    await unit.tx.rollbacks.update(retried)
                    return retried
                return await self._fail(unit, record, message)
        except Exception:
            log.exception("could not record the failed step of rollback %s", rollback_id)
            return None

    async def _fail(self, unit: Unit, record: RollbackRecord, message: str) -> RollbackRecord:
        current = await unit.tx.deployments.get(record.deployment)
        if current is not None and current.state.value == "rolling_back":
            failed_state = rollout.fail(
                current, reason=f"rollback {record.id} failed: {message}", now=unit.now
            )
            await unit.tx.deployments.update(failed_state, expected_revision=current.revision)
        failed = record.model_copy(
            update={
                "status": RollbackStatus.FAILED,
                "finished_at": unit.now,
                "error": message,
                "next_step_at": None,
            }
        )
        await unit.tx.rollbacks.update(failed)
        await unit.emit(
            RollbackFailed(
                rollback_id=record.id,
                snapshot_id=record.target_snapshot_id,
                error=message,
                partial_completion=record.partial_completion,
            ),
            deployment=record.deployment,
            revision=None,
        )
        await unit.audit(
            "rollback.failed",
            deployment=record.deployment,
            reason=record.reason,
            details={
                "rollback_id": record.id,
                "error": message,
                "partial_completion": record.partial_completion,
            },
        )
        return failed

    async def replace_with_immediate(
        self, rollback_id: str, *, reason: str, actor: str
    ) -> RollbackRecord:
        """Stop a running staged rollback and roll back at once, explicitly (the operator's
        way out of a slow or held one)."""
        reason = check_text(reason, "the reason", required=True)
        async with unit_of_work(self._ports, actor) as unit:
            record = await unit.tx.rollbacks.get(rollback_id)
            if record is None:
                raise NotFound(f"no rollback {rollback_id!r}")
            if (
                record.status is not RollbackStatus.RUNNING
                or record.mode is not RollbackMode.STAGED
            ):
                raise Conflict(f"rollback {rollback_id} is not a running staged rollback")
            current = await unit.tx.deployments.get(record.deployment)
            if current is None:
                raise NotFound(f"no deployment named {record.deployment!r}")
            return await self._finish(
                unit, record, current, escalated=f"replaced by {actor}: {reason}"
            )

    async def wait_done(self, rollback_id: str, *, within: float) -> RollbackRecord:
        """Step until ``rollback_id`` is no longer running (for tests and tools)."""
        timeout = within
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            record = await self._manager.get(rollback_id)
            if not record.status.is_open:
                return record
            if asyncio.get_running_loop().time() > deadline:
                raise RollbackFailedError(
                    f"rollback {rollback_id} did not finish in {timeout:g} s",
                    rollback_id=rollback_id,
                )
            await self.step_due()
            await asyncio.sleep(0.01)
