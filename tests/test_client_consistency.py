"""Consistency under load: eight threads assign without pause while 100 splits and rollbacks
happen; every assignment's variant and policy version match the state of the revision it names,
and no thread ever sees a revision go back."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canaryguard.client import Client
from canaryguard.domain.assignment import Criterion, Split, Variant, choose_variant
from tests.servers import RunningServer, server_process

NAME = "payments/security"
THREADS = 8
CHANGES = 100


@pytest.fixture
def served(serve_db: str | None, tmp_path: Path) -> Iterator[RunningServer]:
    """A server process: eight spinning threads here must not starve it of the GIL."""
    with server_process(tmp_path / "data", serve_db) as running:
        yield running


def test_assignments_match_the_revision_they_name(served: RunningServer) -> None:
    server = served
    states: dict[int, dict[str, Any]] = {}
    with server.client() as admin:
        for document in ({"v": 1}, {"v": 2}):
            admin.post("/api/v1/policies/sec/versions", json={"document": document})
        created = admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"}).json()
        states[created["revision"]] = created
        started = admin.post(
            f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 10}
        ).json()
        states[started["revision"]] = started
        token = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()[
            "token"
        ]

    client = Client(server.url, token, [NAME], flush_interval=60)
    done = threading.Event()
    seen: list[list[tuple[int, str, str, str]]] = [[] for _ in range(THREADS)]
    backwards: list[str] = []

    def assign_forever(index: int) -> None:
        rng = random.Random(index)
        last = 0
        while not done.is_set():
            user = f"user-{rng.randrange(100_000)}"
            got = client.assign(NAME, user_id=user)
            if got.revision < last:
                backwards.append(f"thread {index}: {last} -> {got.revision}")
            last = got.revision
            if rng.random() < 0.05:
                seen[index].append((got.revision, got.variant.value, got.policy.version, user))

    workers = [threading.Thread(target=assign_forever, args=(i,)) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    rng = random.Random(42)
    with server.client() as admin:
        for _ in range(CHANGES):
            current = admin.get(f"/api/v1/deployments/{NAME}").json()
            if current["canary"] is None:
                after = admin.post(
                    f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 5}
                ).json()
            elif rng.random() < 0.3:
                admin.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "load test"})
                after = admin.get(f"/api/v1/deployments/{NAME}").json()
            else:
                percent = rng.randrange(1, 10_000) / 100
                after = admin.post(
                    f"/api/v1/deployments/{NAME}/split", json={"percent": percent}
                ).json()
            states[after["revision"]] = after
    done.set()
    for worker in workers:
        worker.join(30)
    client.close()

    checked = 0
    for samples in seen:
        for revision, variant, version, user in samples:
            state = states[revision]
            split = Split(
                canary_basis_points=state["split"]["canary_basis_points"],
                criterion=Criterion(state["split"]["criterion"]),
                salt=state["split"]["salt"],
            )
            expected = choose_variant(split, user_id=user)
            if state["canary"] is None:
                expected = Variant.STABLE
            policy = state["canary"] if expected is Variant.CANARY else state["stable"]
            assert (variant, version) == (expected.value, policy["version"]), (revision, user)
            checked += 1
    assert backwards == []
    assert checked > 1_000
    assert len({revision for samples in seen for revision, *_ in samples}) > 10
