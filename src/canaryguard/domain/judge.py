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
from canaryguard.domain.detector import Counts, Detector, DetectorConfig, Verdict, VerdictKind
from canaryguard.domain.models import MetricsSnapshot, RollbackConfig, VariantMetrics
from canaryguard.domain.windows import RollingWindow, SecondStats, WindowTotals

__all__ = ["Judge", "RunCheckpoint", "conditions_of", "snapshot_of", "variant_metrics"]


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
                block_seconds=config.dispersion_block_seconds,
            ),
            started_at=started_at,
        )
        self.window = RollingWindow(int(config.evaluation_window_minutes * 60))
        self.conditions = conditions_of(config)
        self.extensions = dict(extensions or {})
        self.verdict = Verdict(VerdictKind.INCONCLUSIVE)
        self.results: list[ConditionResult] = []
        self._programs: dict[int, cel.Program] = {}
        self.started_at = started_at
        self.last_second: int | None = None

    def prime(self, history: Sequence[SecondStats | None]) -> None:
        """Stable's seconds before the canary started, oldest first (``None``: no data): the
        detector learns stable's wobble from them (``Detector.prime``); nothing is judged.
        Ignored while the detector is off, and once it has judged a second (switched on
        mid-run, it learns from the run alone)."""
        if self.config.detector_enabled and self.detector.can_prime:
            self.detector.prime([_counts(stats) for stats in history])

    def resume(self, checkpoint: Mapping[str, Any]) -> None:
        """Take the detector of a ``Detector.checkpoint`` (from the process that judged the run
        before) instead of this judge's fresh one, before any second is pushed. Raises
        ``CheckpointError`` when it does not fit, changing nothing."""
        if self.last_second is not None:
            raise RuntimeError("a judge resumes before its first second")
        self.detector = Detector.from_checkpoint(checkpoint)
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
        """Within ``warmup_seconds`` of the canary's start: nothing is judged yet."""
        last = self.started_at if self.last_second is None else self.last_second
        return last - self.started_at < self.config.warmup_seconds

    def _program(self, index: int, condition: Condition) -> cel.Program | None:
        if condition.kind is not ConditionKind.CEL:
            return None
        if index not in self._programs:
            self._programs[index] = compile_expression(condition.expression or "")
        return self._programs[index]
