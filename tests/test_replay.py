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

from canaryguard.domain.conditions import Condition, ConditionKind
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.replay import parse_stream, replay
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
    assert set(decision) == {"rolled_back", "decision_t", "reason", "condition"}
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
