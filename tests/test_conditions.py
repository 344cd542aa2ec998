"""Rollback conditions: thresholds (absolute, relative), CEL checked when saved, extensions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from canaryguard.domain.assignment import Variant
from canaryguard.domain.checks import cel_context, evaluate
from canaryguard.domain.conditions import STORED_CONTEXT, Condition
from canaryguard.domain.judge import Judge
from canaryguard.domain.models import MetricsSnapshot, RollbackConfig, VariantMetrics
from canaryguard.domain.windows import SecondStats
from canaryguard.wiring import load_extensions


def metrics(canary: dict[str, Any], stable: dict[str, Any] | None = None) -> MetricsSnapshot:
    return MetricsSnapshot(
        window_seconds=300,
        until=datetime(2026, 1, 1, tzinfo=UTC),
        canary=VariantMetrics(**canary),
        stable=VariantMetrics(**(stable or {"requests": 9000, "errors": 90})),
    )


def test_error_rate_over_an_absolute_threshold_fires_with_its_figures() -> None:
    result = evaluate(
        Condition(kind="error_rate", threshold=0.05), metrics({"requests": 1000, "errors": 80})
    )
    assert result.fired
    assert result.fired_as == "ErrorRateExceeded"
    assert (result.current, result.threshold, result.window_seconds) == (0.08, 0.05, 300)
    assert result.reason.startswith("canary error rate 8.00% > 5.00% over 300 s")


def test_error_rate_relative_to_stable() -> None:
    condition = Condition(kind="error_rate", threshold=1.5, relative=True)
    assert evaluate(condition, metrics({"requests": 1000, "errors": 20})).fired  # 2 % vs 1 %
    assert not evaluate(condition, metrics({"requests": 1000, "errors": 12})).fired


def test_response_time_on_a_percentile() -> None:
    condition = Condition(kind="response_time", threshold=500, statistic="p99")
    result = evaluate(condition, metrics({"requests": 1000, "p99_ms": 800.0}))
    assert result.fired
    assert result.fired_as == "ResponseTimeExceeded"
    assert "canary p99 latency 800 ms > 500 ms" in result.reason


def test_success_rate_below_threshold() -> None:
    condition = Condition(kind="success_rate", threshold=0.99)
    result = evaluate(condition, metrics({"requests": 1000, "errors": 20}))
    assert result.fired
    assert result.fired_as == "SuccessRateBelowThreshold"


def test_too_few_canary_requests_are_not_judged() -> None:
    condition = Condition(kind="error_rate", threshold=0.05, min_requests=500)
    result = evaluate(condition, metrics({"requests": 10, "errors": 10}))
    assert not result.fired
    assert "not judged" in result.reason


def test_a_cel_condition_is_evaluated_over_the_snapshot() -> None:
    condition = Condition(
        kind="cel", expression="canary.p99_ms > 1.5 * stable.p99_ms && canary.requests > 500"
    )
    slow = metrics({"requests": 1000, "p99_ms": 400.0}, {"requests": 9000, "p99_ms": 200.0})
    fast = metrics({"requests": 1000, "p99_ms": 250.0}, {"requests": 9000, "p99_ms": 200.0})
    assert evaluate(condition, slow).fired
    assert not evaluate(condition, fast).fired


def test_cel_sees_every_figure_as_a_double() -> None:
    context = cel_context(metrics({"requests": 10, "errors": 1}))
    assert context["canary"]["requests"] == 10.0
    assert context["canary"]["error_rate"] == 0.1


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("canary.p99_ms >", "does not parse"),
        ("latency > 1.0", "unknown variable.*latency"),
        ("canary.p99 > 1.0", "unknown field.s. p99;"),
        ('canary.p99_ms + "x" > 1.0', "does not type-check"),
        ("canary.p99_ms", "must give true or false"),
        ("1 / 0 > 0", "does not evaluate.*ZeroDivisionError"),
        ("[1, 2][5] == 1", "does not evaluate.*IndexError"),
        ("9223372036854775807 + 1 > 0", "does not evaluate"),
        ("[1, 2].exists(x, x > 1)", "uses exists: comprehensions are not allowed"),
        ("[1].map(x, [x]).size() > 0", "uses map"),
        ("canary.requests > 2.0 && (canary).foo > 1.0", r"unknown field.s. foo;"),
        ('canary.requests > 2.0 && canary["foo"] > 1.0', r"unknown field.s. foo;"),
        ("window_seconds.foo > 1.0", r"unknown field.s. foo;"),
        ("canary.requests > 1.0 \x00", "no control characters"),
    ],
)
def test_a_bad_cel_expression_is_refused_when_saved(expression: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition(kind="cel", expression=expression)


def test_an_extension_condition_calls_its_function() -> None:
    condition = Condition(kind="extension", extension="budget", params={"limit": 0.5})
    seen: list[Any] = []

    def budget(snapshot: MetricsSnapshot, params: Any) -> bool:
        seen.append(params["limit"])
        return bool(snapshot.canary.error_rate > params["limit"])

    result = evaluate(condition, metrics({"requests": 1000, "errors": 900}), extension=budget)
    assert result.fired
    assert seen == [0.5]


def test_an_extension_that_is_not_installed_never_fires() -> None:
    condition = Condition(kind="extension", extension="missing")
    result = evaluate(condition, metrics({"requests": 1000, "errors": 900}))
    assert not result.fired
    assert "not installed" in result.reason


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "error_rate"}, "needs a threshold"),
        ({"kind": "error_rate", "threshold": 2}, "fraction"),
        ({"kind": "cel"}, "needs an expression"),
        ({"kind": "cel", "expression": "true", "threshold": 1}, "takes no threshold"),
        ({"kind": "extension"}, "names its extension"),
        ({"kind": "error_rate", "threshold": 0.1, "statistic": "p99"}, "takes no statistic"),
        ({"kind": "error_rate", "threshold": 0.1, "params": {"a": 1}}, "takes no params"),
        ({"kind": "cel", "expression": "true", "params": {"a": 1}}, "takes no params"),
        ({"kind": "cel", "expression": "true", "statistic": "p99"}, "takes no statistic"),
        ({"kind": "extension", "extension": "x", "threshold": 1}, "takes no threshold"),
        ({"kind": "extension", "extension": "x", "relative": True}, "takes no threshold"),
        ({"kind": "extension", "extension": "x", "expression": "true"}, "takes no expression"),
        ({"kind": "error_rate", "threshold": 0.1, "name": "a\x00b"}, "no control characters"),
    ],
)
def test_an_incomplete_condition_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition(**fields)


def test_a_misspelt_field_behind_a_short_circuit_is_refused_when_saved() -> None:
    with pytest.raises(ValidationError, match=r"unknown field.*reqests"):
        Condition(kind="cel", expression="canary.p99_ms > 2.0 && canary.reqests > 500.0")


def test_an_extension_that_raises_does_not_fire_and_says_why() -> None:
    condition = Condition(kind="extension", extension="broken")

    def broken(snapshot: MetricsSnapshot, params: Any) -> bool:
        raise RuntimeError("boom")

    result = evaluate(condition, metrics({"requests": 1000}), extension=broken)
    assert not result.fired
    assert "could not be evaluated: boom" in result.reason


def test_extensions_are_loaded_from_their_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_conditions.py").write_text(
        "def budget(metrics, params):\n    return metrics.canary.errors > params['limit']\n"
    )
    info = tmp_path / "my_conditions-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-conditions\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[canaryguard.conditions]\nbudget = my_conditions:budget\nbroken = missing_module:x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    notices: list[str] = []
    loaded = load_extensions(notices)
    assert loaded["budget"](metrics({"requests": 10, "errors": 5}), {"limit": 1})
    assert "broken" not in loaded
    assert any("'broken' failed to load" in notice for notice in notices)


def test_cel_text_in_string_literals_is_not_read_as_fields_or_macros() -> None:
    condition = Condition(
        kind="cel", expression="canary.error_rate > 0.02 && 'x.foo.exists(' != 'x.bar'"
    )
    assert evaluate(condition, metrics({"requests": 1000, "errors": 30})).fired


def test_a_relative_condition_without_stable_traffic_is_not_judged() -> None:
    condition = Condition(kind="response_time", threshold=1.5, relative=True, statistic="p99")
    result = evaluate(condition, metrics({"requests": 1000, "p99_ms": 55.0}, {"requests": 0}))
    assert not result.fired
    assert "0 stable requests" in result.reason


def test_a_stored_condition_is_read_back_without_compiling_it_again() -> None:
    stored = Condition(kind="cel", expression="canary.mean_ms > 100.0").model_dump()
    stored["expression"] = "not a valid expression ("  # as if CEL's rules had changed since
    read = Condition.model_validate(stored, context=STORED_CONTEXT)
    assert read.expression == "not a valid expression ("


def test_a_window_under_a_second_is_one_second_not_an_empty_one() -> None:
    config = RollbackConfig(evaluation_window_minutes=0.01, detector_enabled=False)
    judge = Judge(config, started_at=0)
    second = SecondStats(requests=1000, errors=500, latency_sum_ms=0.0, latency_max_ms=0.0)
    judge.push(0, {Variant.STABLE: second, Variant.CANARY: second})
    metrics, found = judge.judge(datetime(2026, 1, 1, tzinfo=UTC))
    assert metrics.window_seconds == 1
    assert found is not None
    assert found[0] == "ErrorRateExceeded"
