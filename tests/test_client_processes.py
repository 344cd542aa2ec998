"""Several client processes follow one deployment: a split change and a rollback reach every one."""

from __future__ import annotations

import time
from multiprocessing.queues import Queue
from typing import Any

from canaryguard.client import Client
from tests.processes import spawned
from tests.servers import RunningServer

NAME = "payments/security"
PROCESSES = 3


def follow(url: str, token: str, wanted: list[int], out: Queue[Any]) -> None:
    """In a process of its own: report when each wanted revision is being served."""
    with Client(url, token, [NAME], flush_interval=0.2) as client:
        out.put(("ready", client.revision(NAME)))
        for revision in wanted:
            deadline = time.monotonic() + 20
            while (client.revision(NAME) or 0) < revision and time.monotonic() < deadline:
                time.sleep(0.005)
            assignment = client.assign(NAME, user_id="same-user")
            client.record(assignment, ok=True, latency_ms=1)
            out.put((assignment.revision, assignment.document))


def test_every_client_process_gets_the_split_change_and_the_rollback(server: RunningServer) -> None:
    with server.client() as admin:
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
        admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        admin.post(f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 0.01})
        token = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()[
            "token"
        ]
        with spawned(follow, [(server.url, token, [3, 4])] * PROCESSES) as (workers, out):
            assert [out.get(timeout=60)[0] for _ in range(PROCESSES)] == ["ready"] * PROCESSES
            admin.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 100})  # revision 3
            time.sleep(0.5)
            admin.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "bad"})  # rev. 4
            reports = [out.get(timeout=60) for _ in range(2 * PROCESSES)]
            for worker in workers:
                worker.join(30)
        status = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"]
    assert sorted(r[0] for r in reports) == [3] * PROCESSES + [4] * PROCESSES
    assert {str(r[1]) for r in reports if r[0] == 4} == {"{'v': 1}"}  # everyone back on stable
    assert all(w.exitcode == 0 for w in workers)
    assert status["stable"]["requests"] + status["canary"]["requests"] == 2 * PROCESSES
