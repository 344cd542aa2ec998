"""Crash and resume with real processes: ``kill -9`` the server at random moments during 50
staged rollbacks; after the restart all of them complete, each stage was applied exactly once,
and the snapshots and the audit chain are intact. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port

ROLLBACKS = 50
KILLS = 3
STAGED = {
    "stages": [
        {"name": "half", "target_percentage": 50},
        {"name": "quarter", "target_percentage": 25},
        {"name": "tenth", "target_percentage": 10},
        {"name": "stable", "target_percentage": 0},
    ],
    "stage_interval_seconds": 0.3,
    "evaluate_between_stages": False,
}


def serve(data_dir: Path, db_url: str | None, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    command = [sys.executable, "-m", "canaryguard", "serve", "--data-dir", str(data_dir)]
    command += ["--port", str(port)] + (["--db", db_url] if db_url else [])
    with (data_dir.parent / "serve.log").open("ab") as log:  # the child keeps its own copy
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("canaryguard serve did not start")
        time.sleep(0.05)


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def prepare(client: httpx.Client) -> list[str]:
    client.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}}).raise_for_status()
    client.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}}).raise_for_status()
    names = [f"fleet/service-{i:02d}" for i in range(ROLLBACKS)]
    for name in names:
        client.post("/api/v1/deployments", json={"name": name, "stable": "sec@1"})
        client.patch(
            f"/api/v1/deployments/{name}/config", json={"changes": {"staged_rollback": STAGED}}
        ).raise_for_status()
        client.post(
            f"/api/v1/deployments/{name}/canary", json={"policy": "sec@2", "percent": 60}
        ).raise_for_status()
    return names


@pytest.fixture
def store(serve_db: str | None) -> str | None:
    return serve_db


def test_staged_rollbacks_survive_kill_9_and_apply_each_stage_once(
    tmp_path: Path, store: str | None
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    rng = random.Random(20261126)
    process = serve(data_dir, store, port)
    try:
        token = (data_dir / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            names = prepare(client)
            ids = []
            for name in names:
                response = client.post(
                    f"/api/v1/deployments/{name}/rollbacks",
                    json={"reason": "crash test", "staged": True},
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, 1.0))
            kill_hard(process)
            process = serve(data_dir, store, port)
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                records = [client.get(f"/api/v1/rollbacks/{i}").json() for i in ids]
                if all(r["status"] == "completed" for r in records):
                    break
                assert time.monotonic() < deadline, Counter(r["status"] for r in records)
                time.sleep(0.5)
            events: list[dict[str, Any]] = client.get(
                "/api/v1/events/log", params={"limit": 10_000}
            ).json()
            verify = client.get("/api/v1/audit/verify").json()
            snapshots_readable = all(
                client.get(f"/api/v1/snapshots/{r['pre_snapshot_id']}").status_code == 200
                for r in records
            )
            states = {client.get(f"/api/v1/deployments/{n}").json()["state"] for n in names}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    applied = Counter(
        (e["data"]["rollback_id"], e["data"]["stage"])
        for e in events
        if e["type"] == "io.canaryguard.rollback.progress"
    )
    assert set(applied.values()) == {1}, [k for k, n in applied.items() if n > 1]
    assert len(applied) == ROLLBACKS * 4  # from 60 %: half, quarter, tenth, stable
    assert all(len(r["stages"]) == 4 for r in records)
    assert verify["ok"], verify
    assert snapshots_readable
    assert states == {"rolled_back"}
