"""End to end: a served instance, client processes, a canary that turns bad, and the monitor
rolls it back by itself; every client ends on stable."""

from __future__ import annotations

import random
import time
from multiprocessing.queues import Queue
from typing import Any

from canaryguard.client import Client
from tests.processes import spawned
from tests.servers import RunningServer

NAME = "payments/security"
PROCESSES = 2


def application(url: str, token: str, out: Queue[Any]) -> None:
    """In a process of its own: 200 requests a second; requests served the canary fail a third
    of the time. Reports the revision and document it serves once it serves stable again."""
    rng = random.Random()
    with Client(url, token, [NAME], flush_interval=0.5) as client:
        out.put("ready")
        deadline = time.monotonic() + 90
        canary_revision = None  # the revision this process last saw serving the canary
        while time.monotonic() < deadline:
            for _ in range(20):
                assignment = client.assign(NAME, user_id=f"user-{rng.randrange(100_000)}")
                bad = assignment.document.get("v") == 2
                if bad:
                    canary_revision = assignment.revision
                client.record(assignment, ok=not (bad and rng.random() < 0.3), latency_ms=5.0)
            time.sleep(0.1)
            # the only change after the canary started is the rollback
            if canary_revision is not None and (client.revision(NAME) or 0) > canary_revision:
                break
        assignment = client.assign(NAME, user_id="someone")
        out.put((assignment.revision, assignment.document))


def test_a_canary_that_turns_bad_is_rolled_back_by_the_monitor_end_to_end(
    server: RunningServer,
) -> None:
    with server.client() as admin:
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
        admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        admin.patch(
            f"/api/v1/deployments/{NAME}/config",
            json={"changes": {"error_rate_threshold": 0.9}},  # the detector must find it
        )
        token = admin.post("/api/v1/tokens", json={"name": "app", "role": "reporter"}).json()[
            "token"
        ]
        with spawned(application, [(server.url, token)] * PROCESSES) as (workers, out):
            assert [out.get(timeout=60) for _ in range(PROCESSES)] == ["ready"] * PROCESSES
            admin.post(
                f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 20}
            )
            finals = [out.get(timeout=120) for _ in range(PROCESSES)]
            for worker in workers:
                worker.join(30)
        deployment = admin.get(f"/api/v1/deployments/{NAME}").json()
        events = admin.get("/api/v1/events/log", params={"deployment": NAME}).json()
        snapshots = admin.get(f"/api/v1/deployments/{NAME}/snapshots").json()
        audit = admin.get("/api/v1/audit", params={"deployment": NAME}).json()
    assert deployment["state"] == "rolled_back"
    triggered = [e for e in events if e["type"] == "io.canaryguard.rollback.auto_triggered"]
    assert len(triggered) == 1
    assert "canary errors" in triggered[0]["data"]["reason"]
    assert any(s["kind"] == "before_rollback" for s in snapshots)
    assert any(r["actor"] == "canaryguard-monitor" for r in audit)
    assert finals == [(deployment["revision"], {"v": 1})] * PROCESSES
    assert all(w.exitcode == 0 for w in workers)
