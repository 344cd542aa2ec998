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
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

__all__ = [
    "CEL_VARIABLES",
    "FIRED_AS",
    "STORED",
    "STORED_CONTEXT",
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
# the validation context that marks a condition read back from the store (checked when saved)
STORED = "stored"
STORED_CONTEXT = {STORED: True}  # ``model_validate_json(body, context=STORED_CONTEXT)``
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab and newlines are fine
# CEL string literals (raw, triple-quoted, escaped), so that what they hold is not read as code
_STRINGS = re.compile(
    r"""[rR]?(?:'{3}[\s\S]*?'{3}|"{3}[\s\S]*?"{3}|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")"""
)
_MACRO = re.compile(r"\.\s*(all|exists_one|exists|map|filter)\s*\(")
# a selection: ``.name`` not followed by a call (``.size()``), and not a number's ``1.5``
_SELECTION = re.compile(r"(?<![0-9])\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
_INDEX = re.compile(r"""\[\s*(?:'([^']*)'|"([^"]*)")\s*\]""")


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
    def _complete(self, info: ValidationInfo) -> Condition:
        if info.context and info.context.get(STORED):
            # read back from the store: it was checked in full when it was saved, and
            # compiling every expression again at every read would cost each read that much
            return self
        if _CONTROL.search(self.name) or _CONTROL.search(self.expression or ""):
            # it would reach the rollback's reason, which refuses control characters: the
            # automatic rollback would then fail at every try
            raise ValueError("a condition's name and expression take no control characters")
        self._fields_of_kind()
        if self.kind is ConditionKind.EXTENSION:
            return self
        if self.kind is ConditionKind.CEL:
            if not self.expression:
                raise ValueError("a cel condition needs an expression")
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

    def _fields_of_kind(self) -> None:
        """Refuses a field the condition's kind does not read: stored, it would be ignored."""
        kind = self.kind.value
        if (self.kind is ConditionKind.EXTENSION) != (self.extension is not None):
            raise ValueError("an extension condition, and only one, names its extension")
        if self.params and self.kind is not ConditionKind.EXTENSION:
            raise ValueError(f"a {kind} condition takes no params (extensions do)")
        if self.statistic != "mean" and self.kind is not ConditionKind.RESPONSE_TIME:
            raise ValueError(f"a {kind} condition takes no statistic (response_time does)")
        custom = self.kind in {ConditionKind.EXTENSION, ConditionKind.CEL}
        if custom and (self.threshold is not None or self.relative):
            raise ValueError(
                f"a {kind} condition takes no threshold or relative "
                "(write it in the expression, or pass it in params)"
            )
        if self.kind is ConditionKind.EXTENSION and self.expression is not None:
            raise ValueError("an extension condition takes no expression")

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
    bare = _STRINGS.sub('""', expression)  # what the literals say is no selection or macro
    macros = sorted(set(_MACRO.findall(bare)))
    if macros:
        # a snapshot holds no lists to range over, and nested comprehensions over literal
        # lists grow tenfold per level: one short expression could take the server's time
        raise ValueError(
            f"CEL expression uses {', '.join(macros)}: comprehensions are not allowed "
            "(a metrics snapshot has no lists to range over)"
        )
    # every field selected is checked here, not only on the sample below: ``&&`` and ``||``
    # skip an error on a side that does not decide the result, so evaluating would miss a
    # misspelt field there; the only maps are the two variants, so whatever is selected,
    # however it is written (``canary.x``, ``(canary).x``, ``canary["x"]``), is one of theirs
    keys = {single or double for single, double in _INDEX.findall(expression)}
    selected = set(_SELECTION.findall(bare)) | keys
    fields = sorted(selected - set(VARIANT_FIELDS))
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
    except Exception as exc:  # the library raises what Python would: 1 / 0, [1][5], ...
        raise ValueError(
            f"CEL expression does not evaluate on a sample snapshot: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    if not isinstance(result, bool):
        # a bad expression is bad input (422), not a programming error
        raise ValueError(  # noqa: TRY004
            f"CEL expression must give true or false, gave {type(result).__name__}"
        )
    return program
