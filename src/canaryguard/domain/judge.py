"""One canary run's judgement, second by second: the detector, the rolling evaluation window and
the conditions over it. The monitor (live) and ``canaryguard replay`` (a recorded or generated
stream at simulated speed) both use this one class, so a replay decides what the monitor would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cel

from canaryguard.domain.assignment import Variant
from canaryguard.domain.checks import ConditionResult, Extension, evaluate
from canaryguard.domain.conditions import Condition, ConditionKind, compile_expression
from canaryguard.domain.detector import (
    SWING_SECONDS,
    Counts,
    Detector,
    DetectorConfig,
    Verdict,
    VerdictKind,
)
from canaryguard.domain.models import (
    Deployment,
    MetricsSnapshot,
    RollbackConfig,
    SnapshotInfo,
    SnapshotKind,
    VariantMetrics,
)
from canaryguard.domain.windows import RollingWindow, SecondStats, WindowTotals

__all__ = [
    "Judge",
    "RunCheckpoint",
    "conditions_of",
    "history_span",
    "run_start",
    "snapshot_of",
    "variant_metrics",
]


@dataclass(frozen=True, slots=True)
class RunCheckpoint:
    """A canary run's detector as saved by the process judging it, so that a process taking
    the run over (a restart, a new leader) resumes its evidence instead of looking again."""

    run: str  # the run's baseline snapshot id
    deployment: str
    next_second: int  # the first second the detector had not judged
    detector: Mapping[str, Any]  # ``Detector.checkpoint()``
    saved_at: datetime


def conditions_of(config: RollbackConfig) -> list[Condition]:
    """The spec's two threshold conditions from the rollback config, then the custom ones."""
    return [
        Condition(
            kind=ConditionKind.ERROR_RATE,
            threshold=config.error_rate_threshold,
            min_requests=config.min_requests,
        ),
        Condition(
            kind=ConditionKind.RESPONSE_TIME,
            threshold=config.response_time_threshold_ms,
            min_requests=config.min_requests,
        ),
        *config.conditions,
    ]


def variant_metrics(totals: WindowTotals | None) -> VariantMetrics:
    """The model of a variant's window totals (empty when the variant had no traffic)."""
    if totals is None:
        return VariantMetrics()
    return VariantMetrics(
        requests=totals.requests,
        errors=totals.errors,
        latency_sum_ms=totals.latency_sum_ms,
        latency_max_ms=totals.latency_max_ms,
        p50_ms=totals.p50_ms,
        p90_ms=totals.p90_ms,
        p95_ms=totals.p95_ms,
        p99_ms=totals.p99_ms,
    )


def snapshot_of(
    totals: Mapping[Variant, WindowTotals], *, window_seconds: float, until: datetime
) -> MetricsSnapshot:
    """The one metrics model, from both variants' window totals."""
    return MetricsSnapshot(
        window_seconds=window_seconds,
        until=until,
        stable=variant_metrics(totals.get(Variant.STABLE)),
        canary=variant_metrics(totals.get(Variant.CANARY)),
    )


_DEFAULT_BLOCK = DetectorConfig().block_seconds


def run_start(deployment: Deployment, begun: SnapshotInfo | None) -> tuple[datetime, int]:
    """When a canary run began and the first revision of it, from the snapshot that began it
    (``Deployment.run_id``: the canary's start wrote it, or an immediate rollback that
    brought the canary back), not from the state's start or the revision now, which a split
    change moves; without one, from those."""
    if begun is not None and begun.kind in _RUN_BEGINNINGS:
        return begun.created_at, begun.revision + 1
    return deployment.state_since, deployment.revision


# the snapshots that begin a run, each written in the transaction that begins it (so the run's
# first revision is the snapshot's next)
_RUN_BEGINNINGS = frozenset({SnapshotKind.BEFORE_CANARY, SnapshotKind.BEFORE_ROLLBACK})


def history_span(config: RollbackConfig) -> int:
    """How many of stable's seconds before a canary's start its judgement reads: the last
    ``history_seconds``, or the last ``SWING_SECONDS`` when the dispersion block is unset and
    is chosen from them (0 history: nothing, and the block is not chosen either)."""
    history = config.history_seconds
    if history and config.dispersion_block_seconds is None:
        return max(history, SWING_SECONDS)
    return history


def _counts(stats: SecondStats | None) -> Counts:
    if stats is None:
        return Counts()
    return Counts(stats.requests, stats.errors, stats.histogram)


class Judge:
    """Feed it settled seconds in order with ``push``; ask ``judge`` for the state of things."""

    def __init__(
        self,
        config: RollbackConfig,
        *,
        started_at: int,
        extensions: Mapping[str, Extension] | None = None,
    ) -> None:
        self.config = config
        self.detector = Detector(
            DetectorConfig(
                alpha=config.alpha,
                warmup_seconds=config.warmup_seconds,
                # unset: 10 s, or 60 s when stable's last hour swings over minutes
                block_seconds=config.dispersion_block_seconds or _DEFAULT_BLOCK,
                choose_block=config.dispersion_block_seconds is None,
            ),
            started_at=started_at,
        )
        self.window = RollingWindow(config.window_seconds)
        self.conditions = conditions_of(config)
        self.extensions = dict(extensions or {})
        self.verdict = Verdict(VerdictKind.INCONCLUSIVE)
        self.results: list[ConditionResult] = []
        self._programs: dict[int, cel.Program] = {}
        self.started_at = started_at
        self.last_second: int | None = None

    @property
    def history_span(self) -> int:
        """How many of stable's seconds before the start ``prime`` takes (``history_span``)."""
        return history_span(self.config)

    def prime(self, before: Sequence[SecondStats | None]) -> None:
        """Stable's last ``history_span`` seconds before the canary started, oldest first
        (``None``: no data): the detector learns stable's wobble from the last
        ``history_seconds`` of them, and an unset dispersion block is chosen from all of them
        (``Detector.prime``); nothing is judged. Ignored while the detector is off, and once it
        has judged a second (switched on mid-run, it learns from the run alone)."""
        if not (self.config.detector_enabled and self.detector.can_prime):
            return
        stable = [_counts(stats) for stats in before]
        history = stable[max(len(stable) - self.config.history_seconds, 0) :]
        self.detector.prime(history, swings=stable if len(stable) > len(history) else None)

    def resume(self, checkpoint: Mapping[str, Any]) -> None:
        """Take the detector of a ``Detector.checkpoint`` (from the process that judged the run
        before) instead of this judge's fresh one, and its start second, before any second is
        pushed. Raises ``CheckpointError`` when it does not fit, changing nothing."""
        if self.last_second is not None:
            raise RuntimeError("a judge resumes before its first second")
        self.detector = Detector.from_checkpoint(checkpoint)
        self.started_at = int(self.detector.started_at)  # the run's start as it was judged
        self.verdict = self.detector.current()

    def refill(self, second: int, both: Mapping[Variant, SecondStats]) -> None:
        """A second the detector judged before it was resumed: into the conditions' window only
        (its evidence is in the checkpoint already)."""
        self.window.push(second, both)
        self.last_second = second

    def reconfigure(self, config: RollbackConfig) -> None:
        """New conditions at run time (the detector's evidence is kept)."""
        if conditions_of(config) != self.conditions:
            self.conditions = conditions_of(config)
            self._programs.clear()
        self.config = config

    def push(self, second: int, both: Mapping[Variant, SecondStats]) -> None:
        """One settled second of both variants."""
        self.window.push(second, both)
        self.last_second = second
        if self.config.detector_enabled:
            self.verdict = self.detector.update(
                second, _counts(both.get(Variant.STABLE)), _counts(both.get(Variant.CANARY))
            )

    def metrics(self, until: datetime) -> MetricsSnapshot:
        """The evaluation window, ending at ``until`` (its last settled second)."""
        return snapshot_of(self.window.totals(), window_seconds=self.window.seconds, until=until)

    def judge(self, until: datetime) -> tuple[MetricsSnapshot, tuple[str, str] | None]:
        """Evaluate the conditions; the metrics, and the regression found as (condition,
        reason), the detector's first (its evidence is the stronger), or None."""
        metrics = self.metrics(until)
        if self.warming_up:
            self.results = []
            return metrics, None
        self.results = [
            evaluate(
                condition,
                metrics,
                program=self._program(index, condition),
                extension=self.extensions.get(condition.extension or ""),
            )
            for index, condition in enumerate(self.conditions)
        ]
        if self.verdict.kind is VerdictKind.REGRESSION:
            return metrics, (self.verdict.condition, self.verdict.reason)
        for result in self.results:
            if result.fired:
                return metrics, (result.fired_as, result.reason)
        return metrics, None

    @property
    def warming_up(self) -> bool:
        """Within ``warmup_seconds`` of the canary's start: nothing is judged yet. The warm-up
        is the run's own, fixed when it started (the detector keeps it, through checkpoints
        too): a change of ``warmup_seconds`` applies from the next run, and cannot silence a
        run already past its warm-up."""
        last = self.started_at if self.last_second is None else self.last_second
        return last - self.started_at < self.detector.config.warmup_seconds

    def _program(self, index: int, condition: Condition) -> cel.Program | None:
        if condition.kind is not ConditionKind.CEL:
            return None
        if index not in self._programs:
            self._programs[index] = compile_expression(condition.expression or "")
        return self._programs[index]
