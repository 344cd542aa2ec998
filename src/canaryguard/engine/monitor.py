"""The monitor: every tick (default 1 s) it judges every active canary and rolls back a bad one.

Per canary run (keyed by the snapshot taken when the canary started) it keeps a ``Detector``
(the anytime-valid tests, ``domain.detector``) and a rolling evaluation window for the threshold,
CEL and extension conditions (``domain.checks``). Both are fed *settled* seconds: a second is
judged ``settle_seconds`` after it ends, when the clients' one-second flushes have arrived.
Observations are counted from the revision the canary run was first seen at (clients name the
revision of each assignment), so what stable served before a rollback does not leak into the
next canary's judgement.

A regression rolls back at once (kind ``auto``), or after ``veto_seconds`` in which an operator
may veto it. A rolled-back canary is never restarted by the monitor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from canaryguard.domain.assignment import Variant
from canaryguard.domain.checks import Extension
from canaryguard.domain.detector import CheckpointError
from canaryguard.domain.errors import (
    CanaryGuardError,
    Conflict,
    IllegalTransition,
    NotFound,
    NotLeader,
)
from canaryguard.domain.events import AutoRollbackVetoed, RegressionDetected
from canaryguard.domain.judge import Judge, RunCheckpoint, run_start, snapshot_of
from canaryguard.domain.models import (
    AuditRecord,
    Deployment,
    DeploymentState,
    MetricsSnapshot,
    RollbackKind,
    RollbackMode,
    SnapshotInfo,
)
from canaryguard.engine.executor import RollbackExecutor
from canaryguard.engine.leadership import Leadership
from canaryguard.engine.ports import Transaction
from canaryguard.engine.rollback import RollbackManager
from canaryguard.engine.unit import Ports, unit_of_work

__all__ = ["MONITOR_ACTOR", "Decision", "Monitor", "Watch"]

log = logging.getLogger(__name__)

MONITOR_ACTOR = "canaryguard-monitor"
JUDGED_STATES = frozenset(
    {DeploymentState.VALIDATING, DeploymentState.CANARY_ACTIVE, DeploymentState.SCALING}
)
MAX_CATCH_UP = 3_600  # seconds judged in one tick after a stall; older ones are skipped
# how often a run's detector is saved, in judged seconds: a process that takes the run over
# resumes from the last save and judges at most this many seconds a second time. Saving
# 1,000 detectors costs about 3 ticks (SQLite) to 6 (PostgreSQL), 3 KiB each
# (bench/checkpoints.py): every 30 s, a tenth to a fifth of the monitor's time
CHECKPOINT_SECONDS = 30
VETOED = "rollback.auto_vetoed"  # the audit action of a veto
REGRESSION_DETECTED = "canary.regression_detected"  # the audit action of an announcement
DECISIONS_KEPT = 1_000  # the latest decisions ``Monitor.decisions`` keeps
AUDIT_PAGE = 1_000


@dataclass(frozen=True)
class Decision:
    """A regression the monitor acted on (or will, when its veto window ends)."""

    deployment: str
    condition: str
    reason: str
    decided_at: datetime
    metrics: MetricsSnapshot
    rollback_id: str | None = None
    veto_until: datetime | None = None
    vetoed_by: str | None = None


@dataclass
class Watch:
    """One canary run under judgement."""

    run: str  # the canary's baseline snapshot id
    deployment: str
    since_revision: int
    judge: Judge
    next_second: int
    saved_second: int  # ``next_second`` when the detector was last saved (or the watch began)
    primed: bool = False  # the detector has had stable's history (or never will)
    saved_enabled: bool = True  # ``detector_enabled`` then
    # resumed from a checkpoint: the conditions' window is refilled with the seconds before
    # this one once they have been read (a deployment read from Prometheus, after a restart)
    refill_until: int | None = None
    decision: Decision | None = None
    failures: int = 0  # automatic rollbacks of this run that failed in a row
    # a regression found while automatic rollback is off has been announced (once per run)
    regression_announced: bool = False
    retry_at: datetime | None = None  # when to try again after a failure (backing off)


class Monitor:
    """Judges every active canary each tick; see the module docstring."""

    def __init__(
        self,
        ports: Ports,
        rollbacks: RollbackManager,
        *,
        executor: RollbackExecutor | None = None,
        settle_seconds: int = 2,
        extensions: Mapping[str, Extension] | None = None,
    ) -> None:
        self._ports = ports
        self._rollbacks = rollbacks
        self._executor = executor
        self.settle_seconds = settle_seconds
        # more settling while other replicas report too: their share of a second arrives a
        # flush and a follow later (set by ``CanaryGuard``)
        self.extra_settle: Callable[[], int] = lambda: 0
        self.extensions: dict[str, Extension] = dict(extensions or {})
        self._watches: dict[str, Watch] = {}
        # the latest decisions, oldest first: a rollback refused as a conflict (a manual one
        # waits for confirmation) is taken out again, so a run that is decided anew every
        # tick does not pile them up, and the bound keeps a long-lived process's memory flat
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        # with several replicas, only the holder of the controller lease judges and acts
        self.leadership: Leadership | None = None
        # since when this monitor has been judging (None: not now): runs that started before
        # were judged by another process (or this one before a restart), which may have been
        # vetoed there
        self._judging_since: datetime | None = None
        self._pruned = False  # the checkpoints of ended runs were dropped since judging began
        # the last second of a deployment's outcomes that is in whole, or None when every
        # settled second is: a deployment read from a metrics source is judged only as far as
        # it has been read (set by ``CanaryGuard`` from its ``MetricsPuller``)
        self.complete_second: Callable[[Deployment], int | None] = lambda _: None

    def watches(self) -> dict[str, Watch]:
        """Every canary run under judgement, by deployment."""
        return dict(self._watches)

    def watch(self, deployment: str) -> Watch | None:
        """The canary run under judgement for ``deployment``, if any."""
        return self._watches.get(deployment)

    async def run(self, every: float = 1.0) -> None:
        """Tick forever (until cancelled); a failed tick is logged and the next one runs."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("monitor tick failed")
            await asyncio.sleep(every)

    async def tick(self) -> list[Decision]:
        """Judge every active canary once (and expire unconfirmed manual rollbacks); returns the
        decisions taken in this tick. A replica without the controller lease does nothing (its
        watches are dropped: the leader's evidence is the leader's)."""
        if self.leadership is not None and not await self.leadership.hold():
            self._watches.clear()
            self._judging_since = None
            self._pruned = False
            return []
        await self._rollbacks.expire_due()
        now = self._ports.clock.now()
        if self._judging_since is None:
            self._judging_since = now
        baselines: dict[str, SnapshotInfo | None] = {}
        checkpoints: dict[str, RunCheckpoint | None] = {}
        vetoes: dict[str, AuditRecord] = {}
        async with self._ports.store.read() as tx:
            deployments = await tx.deployments.all(JUDGED_STATES)
            active = {
                d.name: d
                for d in deployments
                if d.canary is not None and d.state in JUDGED_STATES and d.run_id
            }
            for d in active.values():
                watch = self._watches.get(d.name)
                if watch is None or watch.run != d.run_id:
                    sealed = await tx.snapshots.get(d.run_id or "")
                    begun = sealed.info if sealed is not None else None
                    baselines[d.name] = begun
                    checkpoints[d.name] = await _checkpoint_of(tx, d)
                    if run_start(d, begun)[0] < self._judging_since:
                        veto = await _veto_of(tx, d.name, d.run_id or "")
                        if veto is not None:
                            vetoes[d.name] = veto
        watched = {w.run for w in self._watches.values()}
        for name in set(self._watches) - set(active):
            del self._watches[name]  # promoted, aborted or rolled back: the run is over
        taken: list[Decision] = []
        for deployment in active.values():
            watch = self._watch_for(
                deployment,
                now,
                baselines.get(deployment.name),
                checkpoints.get(deployment.name),
            )
            if deployment.name in vetoes:
                self._resume_veto(watch, vetoes[deployment.name], now)
            decision = await self._judge(watch, deployment, now)
            if decision is not None:
                taken.append(decision)
        # a run that ended (or was followed by another of the same deployment since the last
        # tick) leaves its checkpoint behind: pruned, as at the first tick this process leads
        runs = {w.run for w in self._watches.values()}
        prune = bool(watched - runs) or not self._pruned
        await self._save_checkpoints(now, keep=runs if prune else None)
        return taken

    async def _save_checkpoints(self, now: datetime, *, keep: set[str] | None) -> None:
        # every CHECKPOINT_SECONDS judged seconds, each run's detector goes to the database
        # (docs/detection.md, controller restarts), and the checkpoints of runs that ended go;
        # a failure here costs a restart some re-judged seconds, never the tick
        due = [w for w in self._watches.values() if _save_due(w)]
        if not due and keep is None:
            return
        # built before the transaction: SQLite's write lock is not held for the JSON's sake
        saved = [
            RunCheckpoint(
                run=w.run,
                deployment=w.deployment,
                next_second=w.next_second,
                detector=w.judge.detector.checkpoint(),
                saved_at=now,
            )
            for w in due
        ]
        try:
            async with self._ports.store.write(exclusive=False) as tx:
                await tx.checkpoints.save(saved)
                if keep is not None:
                    await tx.checkpoints.prune(keep=keep)
        except Exception:
            log.exception("saving the detectors' checkpoints failed")
            return
        for w in due:
            w.saved_second = w.next_second
            w.saved_enabled = w.judge.config.detector_enabled
        if keep is not None:
            self._pruned = True

    def _watch_for(
        self,
        deployment: Deployment,
        now: datetime,
        baseline: SnapshotInfo | None,
        checkpoint: RunCheckpoint | None,
    ) -> Watch:
        run = deployment.run_id or ""
        watch = self._watches.get(deployment.name)
        if watch is not None and watch.run == run:
            watch.judge.reconfigure(deployment.config)
            return watch
        # the run is judged from the canary's start, over the revisions from the start on,
        # both taken from the snapshot the start wrote (not from the state's start or the
        # revision now, which a split change moves): a monitor that takes over the run after
        # a restart resumes the detector the one before it saved, or without a checkpoint
        # replays the same seconds as it did and retraces its evidence (docs/detection.md,
        # controller restarts)
        started, since_revision = run_start(deployment, baseline)
        first = int(max(started, now - timedelta(hours=1)).timestamp())
        watch = Watch(
            run=run,
            deployment=deployment.name,
            since_revision=since_revision,
            judge=Judge(deployment.config, started_at=first, extensions=self.extensions),
            next_second=first,
            saved_second=first,
        )
        if checkpoint is not None:
            self._resume(watch, deployment, checkpoint)
            self._refill(watch, deployment, self.last_second(deployment, now))
        self._watches[deployment.name] = watch
        return watch

    def _resume(self, watch: Watch, deployment: Deployment, checkpoint: RunCheckpoint) -> None:
        # the detector as saved, the run's whole evidence whatever its age, and the start
        # second the judging process gave it; the seconds it judged refill the conditions'
        # window only
        judge = watch.judge
        try:
            judge.resume(checkpoint.detector)
        except CheckpointError as exc:
            log.warning("%s: detector checkpoint not used (%s)", deployment.name, exc)
            return
        watch.refill_until = checkpoint.next_second
        watch.next_second = watch.saved_second = checkpoint.next_second
        watch.saved_enabled = deployment.config.detector_enabled
        watch.primed = True

    def _refill(self, watch: Watch, deployment: Deployment, last: int) -> None:
        # the seconds the resumed detector judged refill the conditions' window only, once
        # they are all there (pulled ones arrive with the first read after a start)
        until = watch.refill_until
        if until is None or last < until - 1:
            return
        watch.refill_until = None
        judge = watch.judge
        for second in range(max(judge.started_at, until - judge.window.seconds), until):
            judge.refill(
                second,
                self._ports.windows.second(
                    deployment.name, second, min_revision=watch.since_revision
                ),
            )

    def _resume_veto(self, watch: Watch, record: AuditRecord, now: datetime) -> None:
        # the run was vetoed before this process took it over: the veto holds here too
        details = record.details
        veto_until = details.get("veto_until")
        watch.decision = Decision(
            deployment=watch.deployment,
            condition=str(details.get("condition", "")),
            reason=record.reason or "",
            decided_at=record.time,
            metrics=watch.judge.metrics(self.until(now)),
            veto_until=datetime.fromisoformat(veto_until) if veto_until else record.time,
            vetoed_by=record.actor,
        )
        self.decisions.append(watch.decision)

    def _prime(self, watch: Watch, deployment: Deployment) -> None:
        # stable before the canary: how much its rates wobble, so the detector need not
        # assume the worst until the canary's own first blocks show it (docs/detection.md).
        # Given when the detector judges the run's first second, so every second of it has
        # settled and it is the same whenever the run was first seen
        watch.primed = True
        start = watch.judge.started_at
        watch.judge.prime(
            [
                self._ports.windows.second(deployment.name, second).get(Variant.STABLE)
                for second in range(start - watch.judge.history_span, start)
            ]
        )

    async def _judge(self, watch: Watch, deployment: Deployment, now: datetime) -> Decision | None:
        last = self.last_second(deployment, now)
        self._refill(watch, deployment, last)
        first = max(watch.next_second, last - MAX_CATCH_UP + 1)
        windows = self._ports.windows
        if not watch.primed and first <= last and deployment.config.detector_enabled:
            self._prime(watch, deployment)
        for second in range(first, last + 1):
            watch.judge.push(
                second, windows.second(deployment.name, second, min_revision=watch.since_revision)
            )
        watch.next_second = max(watch.next_second, last + 1)
        metrics, found = watch.judge.judge(self.until(now))
        if watch.decision is not None:
            return await self._follow_up(watch, deployment, now)
        if found is None:
            return None
        condition, reason = found
        if not deployment.config.auto_rollback_enabled:
            if not watch.regression_announced:
                watch.regression_announced = await self._announce(
                    deployment,
                    RegressionDetected(
                        condition=condition,
                        reason=reason,
                        action="auto_rollback_disabled",
                        metrics=metrics,
                    ),
                )
            return None
        veto = deployment.config.veto_seconds
        watch.decision = Decision(
            deployment=deployment.name,
            condition=condition,
            reason=reason,
            decided_at=now,
            metrics=metrics,
            veto_until=now + timedelta(seconds=veto) if veto else None,
        )
        self.decisions.append(watch.decision)
        if veto:
            log.warning(
                "%s: automatic rollback in %g s unless vetoed: %s", deployment.name, veto, reason
            )
            # the people who may veto have to hear of it now, not when the window has ended
            await self._announce(
                deployment,
                RegressionDetected(
                    condition=condition,
                    reason=reason,
                    action="veto_window",
                    veto_until=watch.decision.veto_until,
                    metrics=metrics,
                ),
            )
            return watch.decision
        return await self._roll_back(watch, deployment)

    def since_start(self, watch: Watch, now: datetime) -> MetricsSnapshot:
        """Both variants from the run's first second to the last settled one."""
        until = self.until(now)
        last = int(until.timestamp())
        totals = self._ports.windows.totals(
            watch.deployment,
            since=watch.judge.started_at,
            until=last,
            min_revision=watch.since_revision,
        )
        return snapshot_of(
            totals, window_seconds=max(last - watch.judge.started_at + 1, 0), until=until
        )

    def last_second(self, deployment: Deployment, now: datetime) -> int:
        """The last second of ``deployment`` to judge at ``now``: settled, and read from the
        metrics source as far as that when the deployment is read from one."""
        last = int(self.until(now).timestamp())
        complete = self.complete_second(deployment)
        return last if complete is None else min(last, complete)

    def until(self, now: datetime) -> datetime:
        """The end of the last settled second at ``now``."""
        return now - timedelta(seconds=self.settle_seconds + self.extra_settle())

    async def _follow_up(
        self, watch: Watch, deployment: Deployment, now: datetime
    ) -> Decision | None:
        decision = watch.decision
        assert decision is not None  # noqa: S101 - only called with one
        if decision.rollback_id or decision.vetoed_by:
            return None
        if not deployment.config.auto_rollback_enabled:
            # switched off while the rollback waited (its veto window, a retry): it waits on,
            # and runs at the first tick after automatic rollback is switched back on
            return None
        if decision.veto_until is not None and now < decision.veto_until:
            return None
        if watch.retry_at is not None and now < watch.retry_at:
            return None
        return await self._roll_back(watch, deployment)

    async def _roll_back(self, watch: Watch, deployment: Deployment) -> Decision | None:
        decision = watch.decision
        assert decision is not None  # noqa: S101 - only called with one
        staged = (
            self._executor is not None
            and deployment.config.auto_rollback_mode is RollbackMode.STAGED
        )
        start = self._executor.start if staged and self._executor else self._rollbacks.rollback
        try:
            record = await start(
                deployment.name,
                reason=f"automatic: {decision.reason}",
                actor=MONITOR_ACTOR,
                kind=RollbackKind.AUTO,
                trigger_metrics=decision.metrics,
                expected_revision=deployment.revision,
            )
        except (Conflict, IllegalTransition, NotFound) as exc:
            # changed under us (promoted, aborted, split changed): judge again next tick
            log.warning("%s: automatic rollback not applied: %s", deployment.name, exc)
            watch.decision = None
            self._forget(decision)
            return None
        except CanaryGuardError:
            # recorded as a failed rollback by the manager; retried, backing off up to 5 min,
            # so a lasting failure does not write a failed record every second
            watch.failures += 1
            watch.retry_at = self._ports.clock.now() + timedelta(
                seconds=min(300, 2**watch.failures)
            )
            log.exception("%s: automatic rollback failed", deployment.name)
            return None
        done = replace(decision, rollback_id=record.id)
        watch.decision = done
        self._replace(decision, done)
        return done

    async def _announce(self, deployment: Deployment, event: RegressionDetected) -> bool:
        """Put a regression the monitor does not roll back at once on record (event and audit),
        for alerts and the event stream; whether it was written. A failure is logged and does
        not stop the tick: the decision stands either way."""
        try:
            async with unit_of_work(self._ports, MONITOR_ACTOR) as unit:
                await unit.emit(event, deployment=deployment.name, revision=deployment.revision)
                await unit.audit(
                    REGRESSION_DETECTED,
                    deployment=deployment.name,
                    reason=event.reason,
                    details={
                        "condition": event.condition,
                        "action": event.action,
                        "veto_until": event.veto_until.isoformat() if event.veto_until else None,
                    },
                )
        except CanaryGuardError as exc:
            log.warning("%s: regression not put on record: %s", deployment.name, exc)
            return False
        return True

    def _replace(self, old: Decision, new: Decision) -> None:
        for index, kept in enumerate(self.decisions):
            if kept is old:
                self.decisions[index] = new
                return
        self.decisions.append(new)  # dropped by the bound meanwhile: kept as the newest

    def _forget(self, decision: Decision) -> None:
        for index, kept in enumerate(self.decisions):
            if kept is decision:
                del self.decisions[index]
                return

    async def veto(self, deployment: str, *, actor: str) -> Decision:
        """Cancel a pending automatic rollback within its veto window (audited). The canary run
        is not rolled back automatically again; an operator can still roll back or abort it."""
        if self.leadership is not None and not self.leadership.is_leader:
            raise NotLeader(
                "this replica does not run the monitor (another holds the controller lease): "
                "send the veto to the leading replica (canaryguard_controller_leader 1)"
            )
        watch = self._watches.get(deployment)
        decision = watch.decision if watch is not None else None
        if watch is None or decision is None or decision.veto_until is None:
            raise NotFound(f"no automatic rollback of {deployment!r} is waiting for a veto")
        if decision.rollback_id is not None:
            raise Conflict(
                f"the automatic rollback of {deployment!r} already ran ({decision.rollback_id})"
            )
        if decision.vetoed_by is not None:
            raise Conflict(
                f"the automatic rollback of {deployment!r} was vetoed by {decision.vetoed_by}"
            )
        now = self._ports.clock.now()
        if now >= decision.veto_until:
            raise Conflict(
                f"the veto window of {deployment!r} ended at {decision.veto_until.isoformat()}"
            )
        # vetoed before the audit record is written, not after: a tick that runs while the
        # write waits on the database (the window may end meanwhile) must not roll back
        vetoed = replace(decision, vetoed_by=actor)
        watch.decision = vetoed
        self._replace(decision, vetoed)
        try:
            async with unit_of_work(self._ports, actor) as unit:
                await unit.emit(
                    AutoRollbackVetoed(
                        vetoed_by=unit.actor, condition=decision.condition, reason=decision.reason
                    ),
                    deployment=deployment,
                    revision=None,
                )
                await unit.audit(
                    VETOED,
                    deployment=deployment,
                    reason=decision.reason,
                    details={
                        "condition": decision.condition,
                        "veto_until": decision.veto_until.isoformat(),
                        "run": watch.run,  # so a process that takes the run over keeps the veto
                    },
                )
        except BaseException:
            # not on record, so not vetoed: the rollback waits for its window as before
            if watch.decision is vetoed:
                watch.decision = decision
            self._replace(vetoed, decision)
            raise
        return vetoed


def _save_due(watch: Watch) -> bool:
    """Whether the watch's detector is to be saved now: every CHECKPOINT_SECONDS judged seconds
    while it is on, and at once when it is switched on or off, so that a process that takes
    the run over feeds it only the seconds judged with it on, as this one did."""
    if not watch.primed:
        return False
    enabled = watch.judge.config.detector_enabled
    if enabled != watch.saved_enabled:
        return True
    return enabled and watch.next_second - watch.saved_second >= CHECKPOINT_SECONDS


async def _checkpoint_of(tx: Transaction, deployment: Deployment) -> RunCheckpoint | None:
    """The saved detector of the deployment's run; one that cannot be read is set aside (the
    run is then retraced) rather than stopping every canary's judgement at every tick."""
    try:
        return await tx.checkpoints.get(deployment.run_id or "")
    except CheckpointError as exc:
        log.warning("%s: detector checkpoint not used (%s)", deployment.name, exc)
        return None


async def _veto_of(tx: Transaction, deployment: str, run: str) -> AuditRecord | None:
    """The audit record of a veto of the canary run ``run`` of ``deployment``, if any."""
    after = 0
    while True:
        page = await tx.audit.read(after_seq=after, deployment=deployment, limit=AUDIT_PAGE)
        for record in page:
            if record.action == VETOED and record.details.get("run") == run:
                return record
        if len(page) < AUDIT_PAGE:
            return None
        after = page[-1].seq
