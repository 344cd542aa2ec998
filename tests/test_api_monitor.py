"""The monitor over HTTP: a deployment's verdict, and the veto of a pending rollback."""

from __future__ import annotations

import time

from tests.servers import RunningServer

NAME = "payments/security"


def prepare(server: RunningServer, *, canary: bool) -> None:
    with server.client() as admin:
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
        admin.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
        admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        if canary:
            admin.post(
                f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 10}
            )


def test_a_deployment_without_a_canary_is_not_judged(server: RunningServer) -> None:
    prepare(server, canary=False)
    with server.client() as admin:
        verdict = admin.get(f"/api/v1/deployments/{NAME}/verdict").json()
    assert (verdict["judged"], verdict["verdict"]) == (False, "not_judged")


def test_a_running_canary_has_a_verdict_with_its_tests_and_conditions(
    server: RunningServer,
) -> None:
    prepare(server, canary=True)
    with server.client() as admin:
        deadline = time.monotonic() + 20
        verdict = admin.get(f"/api/v1/deployments/{NAME}/verdict").json()
        while not verdict["judged"] and time.monotonic() < deadline:
            time.sleep(0.2)  # the monitor ticks every second
            verdict = admin.get(f"/api/v1/deployments/{NAME}/verdict").json()
    assert verdict["judged"]
    assert verdict["verdict"] in {"inconclusive", "healthy"}
    assert [t["name"] for t in verdict["tests"]] == ["errors", "latency_p90", "latency_p99"]
    assert verdict["dispersion_block_seconds"] == 10  # no stable hour to choose minutes from
    assert {c["fired_as"] for c in verdict["conditions"]} >= {
        "ErrorRateExceeded",
        "ResponseTimeExceeded",
    }
    assert verdict["since_start"]["canary"]["requests"] == 0


def test_the_verdict_of_an_unknown_deployment_is_404(server: RunningServer) -> None:
    with server.client() as admin:
        response = admin.get("/api/v1/deployments/nope/verdict")
    assert response.status_code == 404


def test_a_veto_without_a_pending_rollback_is_404_naming_it(server: RunningServer) -> None:
    prepare(server, canary=True)
    with server.client() as admin:
        response = admin.post(f"/api/v1/deployments/{NAME}/veto")
    assert response.status_code == 404
    assert "waiting for a veto" in response.json()["detail"]


def test_a_reporter_may_not_veto(server: RunningServer) -> None:
    prepare(server, canary=True)
    with server.client() as admin:
        token = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()
    with server.client(token=token["token"]) as reporter:
        response = reporter.post(f"/api/v1/deployments/{NAME}/veto")
    assert response.status_code == 403
