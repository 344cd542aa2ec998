"""Evaluating rollback conditions over a metrics snapshot (see ``domain.conditions``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import cel
from pydantic import BaseModel, ConfigDict

from canaryguard.domain.conditions import FIRED_AS, Condition, ConditionKind, compile_expression
from canaryguard.domain.models import MetricsSnapshot, VariantMetrics

__all__ = ["ConditionResult", "Extension", "cel_context", "evaluate"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConditionResult(_Frozen):
    """One condition at one tick: whether it fired, with the figures that decided it."""

    condition: str
    fired_as: str
    fired: bool
    current: float | None = None
    threshold: float | None = None
    window_seconds: float
    reason: str


def _variant_context(m: VariantMetrics) -> dict[str, float]:
    # every figure a double: CEL does not mix int and double in arithmetic
    return {
        "requests": float(m.requests),
        "errors": float(m.errors),
        "error_rate": m.error_rate,
        "success_rate": m.success_rate,
        "mean_ms": m.mean_latency_ms,
        "p50_ms": m.p50_ms,
        "p90_ms": m.p90_ms,
        "p95_ms": m.p95_ms,
        "p99_ms": m.p99_ms,
        "max_ms": m.latency_max_ms,
    }


def cel_context(metrics: MetricsSnapshot) -> dict[str, Any]:
    """The variables a CEL expression sees."""
    return {
        "canary": _variant_context(metrics.canary),
        "stable": _variant_context(metrics.stable),
        "window_seconds": float(metrics.window_seconds),
    }


def _value(condition: Condition, m: VariantMetrics) -> float:
    if condition.kind is ConditionKind.ERROR_RATE:
        return m.error_rate
    if condition.kind is ConditionKind.SUCCESS_RATE:
        return m.success_rate
    if condition.statistic == "mean":
        return m.mean_latency_ms
    value: float = getattr(m, f"{condition.statistic}_ms")
    return value


_UNITS = {
    ConditionKind.ERROR_RATE: ("canary error rate", "%"),
    ConditionKind.SUCCESS_RATE: ("canary success rate", "%"),
    ConditionKind.RESPONSE_TIME: ("canary {statistic} latency", " ms"),
}


def _show(value: float, unit: str) -> str:
    return f"{value:.2%}" if unit == "%" else f"{value:,.0f} ms"


def _broken(
    condition: Condition, base: dict[str, str], window: float, exc: Exception
) -> ConditionResult:
    """A condition that failed to evaluate: it does not fire, and says why."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConditionResult(
        **base,
        fired=False,
        window_seconds=window,
        reason=f"{condition.label} could not be evaluated: {first}",
    )


Extension = Callable[[MetricsSnapshot, Mapping[str, float | str | bool]], bool]


def _too_few(condition: Condition, metrics: MetricsSnapshot) -> str:
    """Why ``condition`` is not judged on so few requests, or "" when it is."""
    if metrics.canary.requests < condition.min_requests:
        return (
            f"{metrics.canary.requests} canary requests, fewer than "
            f"{condition.min_requests}: not judged"
        )
    if condition.relative and metrics.stable.requests < condition.min_requests:
        # too little of stable to compare with (none at all: its rates read as 0, and any
        # canary would be "worse")
        return (
            f"{metrics.stable.requests} stable requests, fewer than "
            f"{condition.min_requests}: nothing to compare with, not judged"
        )
    return ""


def evaluate(
    condition: Condition,
    metrics: MetricsSnapshot,
    *,
    program: cel.Program | None = None,
    extension: Extension | None = None,
) -> ConditionResult:
    """``condition`` over ``metrics``. ``program``: the compiled expression (to skip compiling);
    ``extension``: the loaded Python condition an ``extension`` condition names."""
    window = metrics.window_seconds
    base = {"condition": condition.label, "fired_as": FIRED_AS[condition.kind]}
    too_few = _too_few(condition, metrics)
    if too_few:
        return ConditionResult(**base, fired=False, window_seconds=window, reason=too_few)
    if condition.kind is ConditionKind.EXTENSION:
        try:
            fired = extension is not None and bool(extension(metrics, condition.params))
        except Exception as exc:
            return _broken(condition, base, window, exc)
        verdict = "is not installed" if extension is None else ("fired" if fired else "holds")
        return ConditionResult(
            **base,
            fired=fired,
            window_seconds=window,
            reason=f"extension {condition.extension} {verdict} over {window:g} s",
        )
    if condition.kind is ConditionKind.CEL:
        try:
            program = program or compile_expression(condition.expression or "")
            fired = program.execute(cel_context(metrics)) is True
        except Exception as exc:
            return _broken(condition, base, window, exc)
        return ConditionResult(
            **base,
            fired=fired,
            window_seconds=window,
            reason=f"{condition.expression} is {'true' if fired else 'false'} over {window:g} s",
        )
    assert condition.threshold is not None  # noqa: S101 - checked by the model
    current = _value(condition, metrics.canary)
    limit = condition.threshold
    if condition.relative:
        limit = condition.threshold * _value(condition, metrics.stable)
    below = condition.kind is ConditionKind.SUCCESS_RATE
    fired = current < limit if below else current > limit
    what, unit = _UNITS[condition.kind]
    what = what.format(statistic=condition.statistic)
    relation = ("<" if fired else ">=") if below else (">" if fired else "<=")
    against = f" ({condition.threshold:g} x stable)" if condition.relative else ""
    return ConditionResult(
        **base,
        fired=fired,
        current=current if math.isfinite(current) else None,
        threshold=limit,
        window_seconds=window,
        reason=f"{what} {_show(current, unit)} {relation} {_show(limit, unit)}{against} over "
        f"{window:g} s, {metrics.canary.requests:,} canary requests",
    )
