"""`canaryguard serve` as a process: first start, preset admin token, graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.servers import free_port

STRONG = "preset-admin-token-" + "x" * 24


@contextmanager
def serve(data_dir: Path, **env_extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env.update(env_extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryguard", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_preset_admin_token_works_and_nothing_is_printed(tmp_path: Path) -> None:
    with serve(tmp_path / "data", CANARYGUARD_ADMIN_TOKEN=STRONG) as (process, url):
        response = httpx.get(f"{url}/api/v1/tokens", headers={"Authorization": f"Bearer {STRONG}"})
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    assert response.status_code == 200
    assert not (tmp_path / "data" / "admin-token").exists()
    assert STRONG not in output


def test_weak_preset_admin_token_is_refused_at_start(tmp_path: Path) -> None:
    with serve(tmp_path / "data", CANARYGUARD_ADMIN_TOKEN="short") as (process, _url):
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "at least 32 characters" in output
    assert "Traceback" not in output


def test_stop_signal_ends_event_streams_and_exits_cleanly(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as (process, url):
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=30) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            rest = list(lines)  # the stream ends instead of hanging
        took = time.monotonic() - started
        output, _ = process.communicate(timeout=20)
    assert ": server shutting down" in rest
    assert took < 10
    # uvicorn finishes its shutdown, then re-raises the signal so the exit status tells it
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output


def run_serve(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "canaryguard", "serve", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_unsupported_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_serve("--db", "mysql://x/y", data_dir=tmp_path)
    assert result.returncode == 1
    assert "unsupported database 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_postgresql_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_serve(
        "--db", f"postgresql://postgres@127.0.0.1:{free_port()}/test", data_dir=tmp_path
    )
    assert result.returncode == 1
    assert "does not answer" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_exits_1_not_the_conflict_code(tmp_path: Path) -> None:
    with serve(tmp_path / "first") as (_process, url):
        port = url.rsplit(":", 1)[1]
        result = run_serve("--port", port, data_dir=tmp_path / "second")
    assert result.returncode == 1
    assert "could not serve" in result.stderr


def test_global_data_dir_option_reaches_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "canaryguard", "--data-dir", str(tmp_path / "global"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "global" / "admin-token").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
    assert (tmp_path / "global" / "admin-token").exists()
