"""Live events over Server-Sent Events: CloudEvents, filters, heartbeats, Last-Event-ID resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.servers import RunningServer, server_process

NAME = "payments/security"


def read_events(
    server: RunningServer, count: int, headers: dict[str, str] | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Open the stream, take ``count`` events, disconnect."""
    events: list[dict[str, Any]] = []
    all_headers = {"Authorization": f"Bearer {server.admin_token}", **(headers or {})}
    with httpx.stream(
        "GET", f"{server.url}/api/v1/events", headers=all_headers, params=params, timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                events.append(json.loads("".join(data)))
                data = []
                if len(events) == count:
                    break
    return events


def seed(client: httpx.Client) -> None:
    client.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
    client.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
    client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
    client.post(f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 1})


def test_events_are_cloudevents_with_the_log_sequence_as_id(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
    (event,) = read_events(server, 1, after="0")
    assert event["specversion"] == "1.0"
    assert event["id"] == "1"
    assert event["type"] == "io.canaryguard.policy.published"


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events_in_order(
    server: RunningServer,
) -> None:
    with server.client() as client:
        seed(client)
        (last_seen,) = read_events(server, 1, after="0")
        last_id = client.get("/api/v1/events/log", params={"limit": 10_000}).json()[-1]["id"]
        for i in range(50):
            client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 2 + i})
    missed = read_events(server, 50, headers={"Last-Event-ID": last_id})
    assert last_seen["id"] == "1"
    assert [int(e["id"]) for e in missed] == list(range(int(last_id) + 1, int(last_id) + 51))
    assert [e["data"]["to_percentage"] for e in missed] == [float(2 + i) for i in range(50)]


def first_live_event(*, reading: RunningServer, changing: RunningServer) -> dict[str, Any]:
    """The first live event a stream on ``reading`` gets while the split is changed through
    ``changing`` (again and again, until the stream is subscribed and sees one)."""
    got: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: got.extend(read_events(reading, 1)))
    reader.start()
    with changing.client() as client:
        for percent in range(2, 100):
            client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": percent})
            reader.join(0.2)
            if not reader.is_alive():
                break
    reader.join(5)
    return got[0]


def test_live_events_arrive_while_connected(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
    event = first_live_event(reading=server, changing=server)
    assert event["type"] == "io.canaryguard.split.changed"


def test_filter_by_deployment(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
        client.post("/api/v1/deployments", json={"name": "other/app", "stable": "sec@1"})
    events = read_events(server, 1, after="0", deployment="other/app")
    assert events[0]["subject"] == "other/app"


def test_heartbeats_keep_an_idle_stream_alive(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.stream(
        "GET", f"{server.url}/api/v1/events", headers=headers, timeout=10
    ) as response:
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if line == ": heartbeat":
                break
    assert ": heartbeat" in lines


def test_bad_last_event_id_is_refused(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}", "Last-Event-ID": "yesterday"}
    response = httpx.get(f"{server.url}/api/v1/events", headers=headers)
    assert response.status_code == 400


def test_revoking_a_token_ends_its_open_stream(server: RunningServer) -> None:
    with server.client() as admin:
        made = admin.post("/api/v1/tokens", json={"name": "watcher", "role": "viewer"}).json()
        headers = {"Authorization": f"Bearer {made['token']}"}
        with httpx.stream(
            "GET", f"{server.url}/api/v1/events", headers=headers, timeout=10
        ) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            admin.delete("/api/v1/tokens/watcher")
            rest = list(lines)  # ends within a heartbeat (0.5 s in tests)
    assert ": token revoked or expired" in rest


def read_states(server: RunningServer, count: int, *names: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    params: dict[str, list[str]] = {"deployment": list(names)}
    states: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{server.url}/api/v1/state", headers=headers, params=params, timeout=20
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                states.append(json.loads(line[5:]))
                if len(states) == count:
                    break
    return states


def test_state_stream_opens_with_the_current_state(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
    (state,) = read_states(server, 1, NAME)
    assert (state["name"], state["revision"], state["state"]) == (NAME, 2, "canary_active")
    assert state["canary"]["version"] == "2"
    assert state["split"]["canary_basis_points"] == 100


def test_state_stream_sends_each_new_state_of_watched_deployments_only(
    server: RunningServer,
) -> None:
    with server.client() as client:
        seed(client)
        client.post("/api/v1/deployments", json={"name": "other/app", "stable": "sec@1"})
    got: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: got.extend(read_states(server, 2, NAME)))
    reader.start()
    time.sleep(0.3)
    with server.client() as client:
        client.post("/api/v1/deployments/other/app/canary", json={"policy": "sec@2", "percent": 5})
        client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 40})
    reader.join(10)
    assert [(s["name"], s["revision"]) for s in got] == [(NAME, 2), (NAME, 3)]
    assert got[1]["split"]["canary_basis_points"] == 4000


def test_state_stream_watches_a_deployment_that_does_not_exist_yet(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
    got: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: got.extend(read_states(server, 1, "later/app")))
    reader.start()
    time.sleep(0.3)
    with server.client() as client:
        client.post("/api/v1/deployments", json={"name": "later/app", "stable": "sec@1"})
    reader.join(10)
    assert [(s["name"], s["revision"]) for s in got] == [("later/app", 1)]


def test_state_stream_refuses_a_name_no_deployment_can_have(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/api/v1/state", params={"deployment": "BAD NAME"})
    assert response.status_code == 400
    assert "is not valid" in response.json()["detail"]


def test_a_replica_s_live_stream_carries_a_change_made_through_another(
    serve_db: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # shared: the database (SQLite), keys and admin token
    with (
        server_process(data_dir, serve_db) as first,
        server_process(data_dir, serve_db) as second,
    ):
        with first.client() as client:
            seed(client)
        event = first_live_event(reading=second, changing=first)
    assert event["type"] == "io.canaryguard.split.changed"


def newest_event_id(server: RunningServer) -> int:
    with server.client() as client:
        return int(client.get("/api/v1/events/log", params={"limit": 10_000}).json()[-1]["id"])


def open_stream(server: RunningServer, headers: dict[str, str], **params: str) -> httpx.Response:
    """The answer to opening the event stream, read only when it is an error (no stream)."""
    all_headers = {"Authorization": f"Bearer {server.admin_token}", **headers}
    with httpx.stream(
        "GET", f"{server.url}/api/v1/events", headers=all_headers, params=params, timeout=10
    ) as response:
        if response.status_code != 200:
            response.read()
        return response


def test_last_event_id_beyond_the_newest_event_is_refused_naming_both(
    server: RunningServer,
) -> None:
    with server.client() as client:
        seed(client)
    newest = newest_event_id(server)
    response = open_stream(server, {"Last-Event-ID": str(newest + 5)})
    assert response.status_code == 400
    assert (
        f"Last-Event-ID {newest + 5} is beyond the newest event, {newest}"
        in (response.json()["detail"])
    )


def test_after_beyond_the_newest_event_is_refused_naming_both(server: RunningServer) -> None:
    with server.client() as client:
        seed(client)
    newest = newest_event_id(server)
    response = open_stream(server, {}, after=str(newest + 1))
    assert response.status_code == 400
    assert f"after {newest + 1} is beyond the newest event, {newest}" in response.json()["detail"]


def test_last_event_id_equal_to_the_newest_event_resumes_with_the_next(
    server: RunningServer,
) -> None:
    with server.client() as client:
        seed(client)
    newest = newest_event_id(server)
    got: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: got.extend(read_events(server, 1, {"Last-Event-ID": str(newest)}))
    )
    reader.start()
    time.sleep(0.3)
    with server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 7})
    reader.join(10)
    assert [int(e["id"]) for e in got] == [newest + 1]


def test_last_event_id_with_an_underscore_is_refused(server: RunningServer) -> None:
    response = open_stream(server, {"Last-Event-ID": "1_000"})
    assert response.status_code == 400
    assert "'1_000'" in response.json()["detail"]


def test_last_event_id_with_a_sign_is_refused(server: RunningServer) -> None:
    response = open_stream(server, {"Last-Event-ID": "+0"})
    assert response.status_code == 400


def test_after_with_an_underscore_is_refused(server: RunningServer) -> None:
    response = open_stream(server, {}, after="1_000")
    assert response.status_code == 422
    assert "after" in response.json()["detail"]


def test_event_log_after_with_an_underscore_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/api/v1/events/log", params={"after": "1_0"})
    assert response.status_code == 422


def test_last_event_id_of_thousands_of_digits_is_refused(server: RunningServer) -> None:
    response = open_stream(server, {"Last-Event-ID": "9" * 5000})
    assert response.status_code == 400
    assert "at most" in response.json()["detail"]
