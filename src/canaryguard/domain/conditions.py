"""Rollback conditions over a metrics snapshot: the spec's threshold conditions and custom CEL
expressions. Each is checked when it is saved (a bad one is refused, naming what is wrong) and
evaluated against the evaluation window at every monitor tick.

A threshold is absolute (``canary error rate > 0.05``) or, with ``relative``, a multiple of
stable's value over the same window (``canary p99 > 1.5 x stable p99``). No condition fires
before the canary has ``min_requests`` requests in the window: a handful of requests proves
nothing.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

import cel
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CEL_VARIABLES",
    "FIRED_AS",
    "VARIANT_FIELDS",
    "Condition",
    "ConditionKind",
    "compile_expression",
]


class ConditionKind(StrEnum):
    ERROR_RATE = "error_rate"  # fires as ErrorRateExceeded
    RESPONSE_TIME = "response_time"  # fires as ResponseTimeExceeded
    SUCCESS_RATE = "success_rate"  # fires as SuccessRateBelowThreshold
    CEL = "cel"  # fires as CustomConditionMet
    EXTENSION = "extension"  # a Python condition from the ``canaryguard.conditions`` entry points


FIRED_AS = {
    ConditionKind.ERROR_RATE: "ErrorRateExceeded",
    ConditionKind.RESPONSE_TIME: "ResponseTimeExceeded",
    ConditionKind.SUCCESS_RATE: "SuccessRateBelowThreshold",
    ConditionKind.CEL: "CustomConditionMet",
    ConditionKind.EXTENSION: "CustomConditionMet",
}

Statistic = Literal["mean", "p50", "p90", "p95", "p99"]

# What a CEL expression may name: per variant (``canary.x``, ``stable.x``), and the window.
VARIANT_FIELDS = (
    "requests",
    "errors",
    "error_rate",
    "success_rate",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
)
CEL_VARIABLES = ("canary", "stable", "window_seconds")
MAX_EXPRESSION = 1_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Frozen):
    """One rollback condition. ``kind`` says which; the other fields are its parameters."""

    kind: ConditionKind
    name: str = Field(default="", max_length=64, description="defaults to the kind")
    threshold: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    relative: bool = Field(
        default=False, description="threshold is a multiple of stable's value (e.g. 1.5)"
    )
    statistic: Statistic = Field(default="mean", description="response_time: mean or percentile")
    expression: str | None = Field(default=None, max_length=MAX_EXPRESSION)
    extension: str | None = Field(
        default=None, max_length=64, description="extension: its entry point name"
    )
    params: dict[str, float | str | bool] = Field(default_factory=dict, max_length=32)
    min_requests: int = Field(default=100, ge=1, le=10**9)

    @model_validator(mode="after")
    def _complete(self) -> Condition:
        if (self.kind is ConditionKind.EXTENSION) != (self.extension is not None):
            raise ValueError("an extension condition, and only one, names its extension")
        if self.kind is ConditionKind.EXTENSION:
            return self
        if self.kind is ConditionKind.CEL:
            if not self.expression:
                raise ValueError("a cel condition needs an expression")
            if self.threshold is not None or self.relative:
                raise ValueError("a cel condition takes no threshold (write it in the expression)")
            compile_expression(self.expression)
            return self
        if self.expression is not None:
            raise ValueError(f"a {self.kind.value} condition takes no expression")
        if self.threshold is None:
            raise ValueError(f"a {self.kind.value} condition needs a threshold")
        rate = self.kind in {ConditionKind.ERROR_RATE, ConditionKind.SUCCESS_RATE}
        if rate and not self.relative and self.threshold > 1:
            raise ValueError(
                f"{self.kind.value} threshold is a fraction (0..1), got {self.threshold}"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind.value


_SAMPLE_FIGURES = dict.fromkeys(VARIANT_FIELDS, 1.0)
_SAMPLE = {"canary": _SAMPLE_FIGURES, "stable": _SAMPLE_FIGURES, "window_seconds": 300.0}


def compile_expression(expression: str) -> cel.Program:
    """Compile and check ``expression``: it parses, names only known variables and fields, and
    gives a boolean on a sample snapshot. Raises ``ValueError`` naming the problem."""
    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"CEL expression does not parse: {str(exc).splitlines()[0]}") from exc
    # named fields are checked here too: ``&&`` and ``||`` skip an error on a side that does
    # not decide the result, so evaluating the sample alone would miss a misspelt field there
    fields = sorted(
        set(re.findall(r"\b(?:canary|stable)\.([A-Za-z_][A-Za-z0-9_]*)", expression))
        - set(VARIANT_FIELDS)
    )
    if fields:
        raise ValueError(
            f"CEL expression names unknown field(s) {', '.join(fields)}; "
            f"a variant has {', '.join(VARIANT_FIELDS)}"
        )
    unknown = sorted(set(program.variables()) - set(CEL_VARIABLES))
    if unknown:
        raise ValueError(
            f"CEL expression names unknown variable(s) {', '.join(unknown)}; "
            f"known: {', '.join(CEL_VARIABLES)}"
        )
    try:
        result = program.execute(_SAMPLE)
    except KeyError as exc:
        raise ValueError(
            f"CEL expression names unknown field {exc}; a variant has {', '.join(VARIANT_FIELDS)}"
        ) from exc
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"CEL expression does not type-check: {str(exc).splitlines()[0]}") from exc
    if not isinstance(result, bool):
        # a bad expression is bad input (422), not a programming error
        raise ValueError(  # noqa: TRY004
            f"CEL expression must give true or false, gave {type(result).__name__}"
        )
    return program
