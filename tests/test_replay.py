"""Replay: a stream through the monitor's judgement at simulated speed; record writes one."""

from __future__ import annotations

import json
import math
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from canaryguard.domain.assignment import Variant
from canaryguard.domain.conditions import Condition, ConditionKind
from canaryguard.domain.histogram import bucket_for
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.replay import (
    aggregate_line,
    histogram_samples,
    parse_stream,
    read_stream,
    replay,
)
from canaryguard.domain.windows import SecondStats
from tests.servers import RunningServer
from tests.test_cli import NAME, cli, start_canary


def stream(seconds: int, *, canary_rate: float, seed: int = 7) -> list[dict[str, Any]]:
    """Per-second aggregates: 900 stable and 100 canary requests a second."""
    rng = random.Random(seed)
    lines = []
    for t in range(seconds):
        for variant, n, rate in (("stable", 900, 0.01), ("canary", 100, canary_rate)):
            errors = sum(rng.random() < rate for _ in range(n))
            lines.append(
                {"t": t, "variant": variant, "requests": n, "errors": errors,
                 "latency_ms": [round(rng.lognormvariate(3.9, 0.3), 1) for _ in range(n)]}
            )  # fmt: skip
    return lines


def test_a_bad_canary_is_rolled_back_with_when_and_why() -> None:
    result = replay(parse_stream(stream(300, canary_rate=0.03)), RollbackConfig())
    assert result.rolled_back
    assert result.condition == "errors"
    assert result.decision_t is not None
    assert 3 <= result.decision_t < 300
    assert "canary errors" in result.reason


def test_a_good_canary_is_not_rolled_back() -> None:
    result = replay(parse_stream(stream(300, canary_rate=0.01)), RollbackConfig())
    assert not result.rolled_back
    assert result.decision_t is None


def test_replay_is_deterministic() -> None:
    lines = stream(200, canary_rate=0.025, seed=11)
    first = replay(parse_stream(lines), RollbackConfig())
    again = replay(parse_stream(list(reversed(lines))), RollbackConfig())  # order is free
    assert first == again


def history(seconds: int, *, seed: int = 5) -> list[dict[str, Any]]:
    """Stable alone before the canary started (negative t): 1,000 requests a second, 1 %."""
    rng = random.Random(seed)
    return [
        {"t": t, "variant": "stable", "requests": 1000,
         "errors": sum(rng.random() < 0.01 for _ in range(1000)), "latency_ms": []}
        for t in range(-seconds, 0)
    ]  # fmt: skip


def test_stable_lines_before_the_canary_are_history_that_speeds_the_decision() -> None:
    lines = stream(300, canary_rate=0.02, seed=3)
    cold = replay(parse_stream(lines), RollbackConfig())
    primed = replay(parse_stream(history(300) + lines), RollbackConfig())
    assert cold.decision_t is not None
    assert primed.decision_t is not None
    assert primed.decision_t < cold.decision_t


def test_history_stays_out_of_the_evaluation_window() -> None:
    # stable at 5 % before the canary would hide a canary at 3 % errors in a window that
    # counted it; the window holds the canary's run only, so the relative condition fires
    before = [{**line, "errors": 50} for line in history(60)]
    relative = Condition(kind=ConditionKind.ERROR_RATE, threshold=2.0, relative=True)
    config = RollbackConfig(detector_enabled=False, conditions=[relative])
    result = replay(parse_stream(before + stream(30, canary_rate=0.03)), config)
    assert result.rolled_back
    assert result.condition == "ErrorRateExceeded"


def test_history_seconds_zero_ignores_the_history() -> None:
    lines = stream(300, canary_rate=0.02, seed=3)
    config = RollbackConfig(history_seconds=0)
    assert replay(parse_stream(history(300) + lines), config) == replay(parse_stream(lines), config)


def test_single_requests_and_aggregates_mean_the_same() -> None:
    requests = [
        {"t": t + i / 100, "variant": "canary", "ok": i >= 5, "latency_ms": 40.0}
        for t in range(50)
        for i in range(100)
    ]
    seconds = parse_stream(requests)
    assert seconds[3][next(iter(seconds[3]))].requests == 100
    assert seconds[3][next(iter(seconds[3]))].errors == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"t": 1, "variant": "blue", "ok": True, "latency_ms": 1}, "line 1: variant"),
        (
            {"t": -1, "variant": "canary", "ok": True, "latency_ms": 1},
            "t must be >= 0 for the canary",
        ),
        ({"t": 1, "variant": "canary", "ok": "yes", "latency_ms": 1}, "'ok' must be true"),
        ({"t": 1, "variant": "canary", "requests": 1, "errors": 2}, "exceed requests"),
        ({"t": 1, "variant": "canary"}, "neither a request"),
        ({"t": "x", "variant": "canary", "ok": True, "latency_ms": 1}, "'t' must be a finite"),
    ],
)
def test_a_bad_line_is_named(line: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_stream([line])


def test_the_replay_command_prints_the_decision_as_json(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in stream(200, canary_rate=0.03)))
    result = cli(None, "replay", str(path), "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert set(decision) == {
        "rolled_back", "decision_t", "regression_t", "reason", "condition", "seconds"
    }  # fmt: skip
    assert decision["rolled_back"] is True


def test_the_replay_command_takes_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in stream(200, canary_rate=0.03)))
    config = tmp_path / "config.yaml"
    config.write_text("detector_enabled: false\nerror_rate_threshold: 0.5\n")
    result = cli(None, "replay", str(path), "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back"] is False


def test_the_replay_command_names_a_bad_line_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text('{"t": 1, "variant": "canary", "ok": true, "latency_ms": 1}\nnot json\n')
    result = cli(None, "replay", str(path))
    assert result.returncode == 1
    assert "line 2 is not JSON" in result.stderr


def test_the_replay_command_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text("")
    config = tmp_path / "config.json"
    config.write_text('{"alpha": 5}')
    result = cli(None, "replay", str(path), "--config", str(config))
    assert result.returncode == 1
    assert "alpha" in result.stderr


def report_and_record(
    server: RunningServer, batch: list[dict[str, Any]], out: Path, *, seconds: int
) -> list[dict[str, Any]]:
    """Report ``batch`` to the server, then ``record`` for ``seconds``: the lines written."""
    with server.client() as admin:
        response = admin.post("/api/v1/observations", json={"observations": batch})
        assert response.status_code == 202, response.text
    result = cli(server, "record", NAME, "--out", str(out), "--seconds", str(seconds))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_record_writes_live_observations_in_the_replay_format(
    server: RunningServer, tmp_path: Path
) -> None:
    start_canary(server)
    time.sleep(3)  # a second of the canary's run that the server has settled
    second = int(time.time()) - 2
    batch = [
        {"deployment": NAME, "variant": variant, "second": second, "revision": 3,
         "requests": n, "errors": 1, "latency_sum_ms": 10.0 * n, "latency_max_ms": 10.0,
         "histogram": {"24": n}}
        for variant, n in (("stable", 9), ("canary", 2))
    ]  # fmt: skip
    lines = report_and_record(server, batch, tmp_path / "recorded.jsonl", seconds=2)
    assert sorted((line["variant"], line["requests"], line["errors"]) for line in lines) == [
        ("canary", 2, 1),
        ("stable", 9, 1),
    ]
    assert all(len(line["latency_ms"]) == line["requests"] for line in lines)
    seconds = parse_stream(lines)  # the replay format, as written
    assert sum(s.requests for both in seconds.values() for s in both.values()) == 11


def test_record_writes_stable_s_history_before_the_canary_with_negative_t(
    server: RunningServer, tmp_path: Path
) -> None:
    start_canary(server)
    with server.client() as admin:
        status = admin.get(f"/api/v1/deployments/{NAME}/status").json()
        origin = math.floor(datetime.fromisoformat(status["deployment"]["state_since"]).timestamp())
        batch = [
            {"deployment": NAME, "variant": variant, "second": origin - 5, "revision": 1,
             "requests": 10, "errors": 1, "latency_sum_ms": 100.0, "latency_max_ms": 10.0,
             "histogram": {"24": 10}}
            for variant in ("stable", "canary")
        ]  # fmt: skip
    lines = report_and_record(server, batch, tmp_path / "recorded.jsonl", seconds=1)
    before = [line for line in lines if line["t"] < 0]
    assert [(line["t"], line["variant"]) for line in before] == [(-5, "stable")]
    assert parse_stream(lines)[-5]  # replay reads it back as history


def test_a_stream_of_history_alone_judges_nothing() -> None:
    result = replay(parse_stream(history(30)), RollbackConfig())
    assert (result.rolled_back, result.seconds) == (False, 0)


def aggregate(**fields: Any) -> dict[str, Any]:
    """One canary aggregate line at t=0 (fields replace the defaults)."""
    return {"t": 0, "variant": "canary", "requests": 10, "errors": 0, **fields}


def canary_at_0(lines: list[dict[str, Any]]) -> SecondStats:
    return parse_stream(lines)[0][Variant.CANARY]


def test_an_aggregate_s_latency_sum_ms_is_its_latency_sum() -> None:
    line = aggregate(requests=950, latency_ms=[41.0, 52.5], latency_sum_ms=43_700.0)
    assert canary_at_0([line]).latency_sum_ms == 43_700.0


def test_without_latency_sum_ms_the_samples_mean_stands_for_every_request() -> None:
    line = aggregate(requests=950, latency_ms=[41.0, 52.5])
    assert canary_at_0([line]).latency_sum_ms == pytest.approx(46.75 * 950)


def test_an_aggregate_s_latency_max_ms_is_its_latency_max() -> None:
    line = aggregate(latency_ms=[41.0], latency_max_ms=300.0)
    assert canary_at_0([line]).latency_max_ms == 300.0


def test_the_samples_bucket_shares_stand_for_every_request_of_the_line() -> None:
    line = aggregate(requests=1000, latency_ms=[10.0, 10.0, 10.0, 100.0])
    assert canary_at_0([line]).histogram == {bucket_for(10.0): 750, bucket_for(100.0): 250}


def test_histogram_samples_are_capped_at_1000_in_the_buckets_proportions() -> None:
    samples = histogram_samples({24: 3_000_000, 30: 1_000_000})
    buckets = [bucket_for(sample) for sample in samples]
    assert (len(samples), buckets.count(24), buckets.count(30)) == (1000, 750, 250)


def test_a_recorded_second_replays_as_the_live_monitor_saw_it() -> None:
    live = SecondStats(3_000_000, 30_000, 42.0 * 3_000_000, 400.0, {39: 2_250_000, 45: 750_000})
    line = aggregate_line(5, Variant.CANARY, live)
    assert parse_stream([line])[5][Variant.CANARY] == live


def test_a_recorded_line_without_a_histogram_keeps_the_latency_sum() -> None:
    live = SecondStats(100, 1, 4_200.0, 90.0, {})
    line = aggregate_line(5, Variant.CANARY, live)
    assert parse_stream([line])[5][Variant.CANARY] == live


@pytest.mark.parametrize("t", [1e12, 604_801, -604_801, 10**400])
def test_a_t_beyond_a_week_is_refused_naming_the_line_and_field(t: float) -> None:
    line = {"t": t, "variant": "stable", "ok": True, "latency_ms": 1}
    with pytest.raises(ValueError, match=r"line 1: 't' must be from -604800 to 604800"):
        parse_stream([line])


@pytest.mark.parametrize("field", ["requests", "errors"])
def test_a_fractional_count_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=f"line 1: '{field}' must be a whole number"):
        parse_stream([aggregate(**{field: 0.5})])


@pytest.mark.parametrize("field", ["requests", "errors"])
def test_a_count_above_the_live_observations_bound_is_refused(field: str) -> None:
    line = (
        aggregate(requests=10**12 + 1, errors=0)
        if field == "requests"
        else aggregate(requests=10**12, errors=10**12 + 1)
    )
    with pytest.raises(ValueError, match=f"line 1: '{field}' must be from 0 to 1e\\+12"):
        parse_stream([line])


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"t": 0, "variant": "canary", "ok": True, "latency_ms": 1e19}, "latency_ms"),
        (aggregate(latency_sum_ms=1e19), "latency_sum_ms"),
        (aggregate(latency_max_ms=1e19), "latency_max_ms"),
    ],
)
def test_a_latency_above_the_live_observations_bound_is_refused(
    line: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=f"line 1: '{field}' must be from 0 to 1e\\+18"):
        parse_stream([line])


def test_a_bad_latency_sample_is_named_by_its_index() -> None:
    with pytest.raises(ValueError, match=r"line 1: 'latency_ms\[1\]' must be a finite number"):
        parse_stream([aggregate(latency_ms=[1.0, "slow"])])


def test_with_auto_rollback_off_a_regression_is_reported_without_a_decision_t() -> None:
    config = RollbackConfig(auto_rollback_enabled=False)
    result = replay(parse_stream(stream(300, canary_rate=0.03)), config)
    assert (result.rolled_back, result.decision_t) == (False, None)
    assert result.regression_t is not None
    assert 3 <= result.regression_t < 300


def test_with_auto_rollback_off_every_second_of_the_stream_counts() -> None:
    config = RollbackConfig(auto_rollback_enabled=False)
    assert replay(parse_stream(stream(300, canary_rate=0.03)), config).seconds == 300


def test_a_json_string_holding_a_unicode_line_separator_stays_one_line() -> None:
    data = '{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1, "note": "a\u2028b"}\n'
    assert read_stream(data.encode())[0][Variant.CANARY].requests == 1


def test_crlf_line_ends_are_read() -> None:
    data = b'{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1}\r\n' * 2
    assert read_stream(data)[0][Variant.CANARY].requests == 2


def test_a_byte_order_mark_at_the_start_of_the_file_is_skipped() -> None:
    data = b'\xef\xbb\xbf{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1}\n'
    assert read_stream(data)[0][Variant.CANARY].requests == 1


def write_stream(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "stream.jsonl"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_the_replay_command_numbers_lines_as_the_file_does(tmp_path: Path) -> None:
    good = '{"t": 0, "variant": "stable", "ok": true, "latency_ms": 1}'
    bad = '{"t": 1, "variant": "canary", "ok": "yes", "latency_ms": 1}'
    result = cli(None, "replay", str(write_stream(tmp_path, f"{good}\n\n\n{bad}\n")))
    assert result.returncode == 1
    assert "line 4: 'ok' must be true or false" in result.stderr


@pytest.mark.parametrize("digits", [400, 5_000])
def test_the_replay_command_names_the_line_of_a_huge_integer(tmp_path: Path, digits: int) -> None:
    good = '{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1}'
    huge = f'{{"t": 1{"0" * digits}, "variant": "canary", "ok": true, "latency_ms": 1}}'
    result = cli(None, "replay", str(write_stream(tmp_path, f"{good}\n{huge}\n")))
    assert (result.returncode, "Traceback" in result.stderr) == (1, False)
    assert "line 2" in result.stderr


def test_the_replay_command_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    good = b'{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1}\n'
    result = cli(None, "replay", str(write_stream(tmp_path, good + b'{"t": 1\xff}\n')))
    assert result.returncode == 1
    assert "line 2 is not UTF-8" in result.stderr


def test_the_replay_command_refuses_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = write_stream(tmp_path, '{"t": 0, "variant": "canary", "ok": true, "latency_ms": 1}\n')
    config = tmp_path / "config.yaml"
    config.write_bytes(b"alpha: 0.01\n# caf\xe9\n")
    result = cli(None, "replay", str(path), "--config", str(config))
    assert (result.returncode, "Traceback" in result.stderr) == (1, False)
    assert f"{config} is not UTF-8" in result.stderr


@pytest.mark.parametrize(
    "text",
    ["", "\n  \n", json.dumps(history(5)[0]) + "\n"],
    ids=["empty", "blank", "history only"],
)
def test_the_replay_command_refuses_a_stream_without_canary_traffic(
    tmp_path: Path, text: str
) -> None:
    path = write_stream(tmp_path, text)
    result = cli(None, "replay", str(path))
    assert result.returncode == 1
    assert f"no canary traffic in {path}" in result.stderr


def test_the_replay_command_says_a_regression_was_found_but_auto_rollback_is_off(
    tmp_path: Path,
) -> None:
    path = write_stream(tmp_path, "\n".join(json.dumps(x) for x in stream(200, canary_rate=0.03)))
    config = tmp_path / "config.yaml"
    config.write_text("auto_rollback_enabled: false\n")
    result = cli(None, "replay", str(path), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no rollback over 200 s of traffic: regression found at t=")
    assert "but auto_rollback_enabled is off" in result.stdout


def test_record_writes_the_latency_sum_and_max_it_observed(
    server: RunningServer, tmp_path: Path
) -> None:
    start_canary(server)
    time.sleep(3)  # a second of the canary's run that the server has settled
    batch = [
        {"deployment": NAME, "variant": "canary", "second": int(time.time()) - 2, "revision": 3,
         "requests": 4, "errors": 0, "latency_sum_ms": 170.0, "latency_max_ms": 90.0}
    ]  # fmt: skip
    [line] = report_and_record(server, batch, tmp_path / "recorded.jsonl", seconds=2)
    assert (line["latency_sum_ms"], line["latency_max_ms"], line["latency_ms"]) == (170.0, 90.0, [])


def test_record_counts_t_from_the_run_s_start_not_from_a_split_change(
    server: RunningServer, tmp_path: Path
) -> None:
    start_canary(server)
    with server.client() as admin:
        status = admin.get(f"/api/v1/deployments/{NAME}/status").json()
    started = math.floor(datetime.fromisoformat(status["deployment"]["state_since"]).timestamp())
    time.sleep(2.5)
    # to 0 %: the canary is validated again, a new state (and state_since) in the same run
    assert cli(server, "deploy", "split", NAME, "--percent", "0").returncode == 0
    batch = [
        {"deployment": NAME, "variant": "canary", "second": started + 1, "revision": 3,
         "requests": 5, "errors": 0, "latency_sum_ms": 50.0, "latency_max_ms": 10.0}
    ]  # fmt: skip
    lines = report_and_record(server, batch, tmp_path / "recorded.jsonl", seconds=3)
    assert [(line["t"], line["variant"]) for line in lines] == [(1, "canary")]


@pytest.mark.parametrize("out", ["", "missing/recorded.jsonl"], ids=["directory", "no parent"])
def test_record_names_an_out_file_it_cannot_write(
    server: RunningServer, tmp_path: Path, out: str
) -> None:
    start_canary(server)
    path = tmp_path / out
    result = cli(server, "record", NAME, "--out", str(path), "--seconds", "1")
    assert (result.returncode, "Traceback" in result.stderr) == (1, False)
    assert f"cannot write {path}" in result.stderr
