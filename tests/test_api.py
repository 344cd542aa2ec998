"""The REST API against a real uvicorn on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from canaryguard.domain.assignment import Split, Variant, choose_variant
from canaryguard.domain.observation_batch import CONTENT_TYPE, encode
from tests.servers import RunningServer

NAME = "payments/security"
DOC1 = {"security": {"tls": "1.2"}, "rate_limit": 100}
DOC2 = {"security": {"tls": "1.3"}, "rate_limit": 50}


def setup_canary(client: httpx.Client, percent: float = 10) -> dict[str, object]:
    assert client.post("/api/v1/policies/sec/versions", json={"document": DOC1}).status_code == 201
    assert client.post("/api/v1/policies/sec/versions", json={"document": DOC2}).status_code == 201
    assert (
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"}).status_code
        == 201
    )
    response = client.post(
        f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": percent}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_publishing_identical_content_returns_200_and_the_same_version(
    server: RunningServer,
) -> None:
    with server.client() as client:
        first = client.post("/api/v1/policies/sec/versions", json={"document": DOC1})
        again = client.post(
            "/api/v1/policies/sec/versions", json={"document": dict(reversed(DOC1.items()))}
        )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()


def test_canary_then_rollback_over_http(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        rolled = client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "errors up"})
        deployment = client.get(f"/api/v1/deployments/{NAME}").json()
    assert rolled.status_code == 201
    assert rolled.json()["status"] == "completed"
    assert (deployment["state"], deployment["canary"], deployment["revision"]) == (
        "rolled_back",
        None,
        3,
    )


def test_deployment_read_carries_its_revision_as_etag(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.get(f"/api/v1/deployments/{NAME}")
    assert response.headers["etag"] == '"2"'


def test_stale_if_match_gets_412_and_changes_nothing(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        stale = client.post(
            f"/api/v1/deployments/{NAME}/split", json={"percent": 50}, headers={"If-Match": '"1"'}
        )
        after = client.get(f"/api/v1/deployments/{NAME}").json()
    assert stale.status_code == 412
    assert stale.json()["current_revision"] == 2
    assert after["split"]["canary_basis_points"] == 1000


def test_current_if_match_applies(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        ok = client.post(
            f"/api/v1/deployments/{NAME}/split", json={"percent": 50}, headers={"If-Match": '"2"'}
        )
    assert (ok.status_code, ok.headers["etag"]) == (200, '"3"')


def test_stale_expected_revision_gets_409_problem(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        stale = client.post(
            f"/api/v1/deployments/{NAME}/split", json={"percent": 50, "expected_revision": 1}
        )
    assert stale.status_code == 409
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["type"].endswith("/conflict")


def test_unknown_deployment_is_a_404_problem_naming_it(server: RunningServer) -> None:
    with server.client() as client:
        response = client.get("/api/v1/deployments/no/such")
    problem = response.json()
    assert (response.status_code, problem["status"], problem["title"]) == (404, 404, "Not Found")
    assert "no/such" in problem["detail"]


def test_wrong_type_in_the_body_is_a_422_problem_naming_the_field(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": "lots"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "body/percent"


def test_unknown_field_in_the_body_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(
            f"/api/v1/deployments/{NAME}/split", json={"percent": 5, "persent": 6}
        )
    assert response.status_code == 422
    assert "persent" in response.json()["detail"]


def test_percentage_out_of_range_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 101})
    assert response.status_code == 422


def test_schema_violation_lists_each_failed_rule(server: RunningServer) -> None:
    with server.client() as client:
        schema = {"type": "object", "properties": {"rate_limit": {"minimum": 1}}}
        assert client.put("/api/v1/policies/sec/schema", json={"schema": schema}).status_code == 204
        response = client.post(
            "/api/v1/policies/sec/versions", json={"document": {"rate_limit": 0}}
        )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"path": "/rate_limit", "message": "minimum: 0 is less than the minimum of 1"}
    ]


def test_oversized_body_is_refused_with_413(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post(
            "/api/v1/policies/sec/versions",
            content=b'{"document": {"x": "' + b"a" * 3_000_000 + b'"}}',
            headers={"content-type": "application/json"},
        )
        names = client.get("/api/v1/policies").json()
    assert response.status_code == 413
    assert names == []


def test_illegal_transition_is_a_409_problem(server: RunningServer) -> None:
    with server.client() as client:
        client.post("/api/v1/policies/sec/versions", json={"document": DOC1})
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        response = client.post(f"/api/v1/deployments/{NAME}/promote")
    assert response.status_code == 409
    assert response.json()["detail"] == "cannot promote a deployment that is idle"


def test_audit_names_the_token_as_actor(server: RunningServer) -> None:
    with server.client() as client:
        made = client.post(
            "/api/v1/tokens", json={"name": "ci-deployer", "role": "operator"}
        ).json()
    with server.client(made["token"]) as operator:
        setup_canary(operator)
    with server.client() as client:
        actors = {
            r["actor"] for r in client.get("/api/v1/audit", params={"deployment": NAME}).json()
        }
    assert actors == {"ci-deployer"}


def test_revoked_token_is_refused_at_once(server: RunningServer) -> None:
    with server.client() as client:
        made = client.post("/api/v1/tokens", json={"name": "temp", "role": "viewer"}).json()
        with server.client(made["token"]) as viewer:
            assert viewer.get("/api/v1/deployments").status_code == 200
            assert client.delete("/api/v1/tokens/temp").status_code == 200
            assert viewer.get("/api/v1/deployments").status_code == 401


def test_expired_token_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        made = client.post(
            "/api/v1/tokens", json={"name": "brief", "role": "viewer", "expires_in_days": 0.00001}
        ).json()
    time.sleep(1.0)
    with server.client(made["token"]) as viewer:
        assert viewer.get("/api/v1/deployments").status_code == 401


def test_token_list_never_shows_secrets_or_digests(server: RunningServer) -> None:
    with server.client() as client:
        client.post("/api/v1/tokens", json={"name": "t1", "role": "viewer"})
        listed = client.get("/api/v1/tokens").text
    assert "sha256" not in listed
    assert "cgt_" not in listed


def test_weak_token_name_or_role_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        bad_role = client.post("/api/v1/tokens", json={"name": "x", "role": "root"})
        bad_name = client.post("/api/v1/tokens", json={"name": "a b", "role": "viewer"})
    assert (bad_role.status_code, bad_name.status_code) == (422, 400)


def test_snapshot_pin_diff_and_show(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        made = client.post(
            f"/api/v1/deployments/{NAME}/snapshots", json={"note": "mark", "pinned": False}
        ).json()
        pinned = client.post(f"/api/v1/snapshots/{made['id']}/pin", json={"pinned": True}).json()
        first = client.get(f"/api/v1/deployments/{NAME}/snapshots").json()[0]["id"]
        changes = client.get(f"/api/v1/snapshots/{first}/diff/{made['id']}").json()
        shown = client.get(f"/api/v1/snapshots/{made['id']}").json()
    assert pinned["pinned"] is True
    assert "/state" in {c["path"] for c in changes}
    assert shown["canary"]["document"] == DOC2


def test_config_change_needs_admin_and_validates(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        bad = client.patch(
            f"/api/v1/deployments/{NAME}/config", json={"changes": {"max_snapshots": -1}}
        )
        good = client.patch(
            f"/api/v1/deployments/{NAME}/config", json={"changes": {"max_snapshots": 7}}
        )
        shown = client.get(f"/api/v1/deployments/{NAME}/config").json()
    assert (bad.status_code, good.status_code, shown["max_snapshots"]) == (400, 200, 7)


def test_status_reports_metrics_and_rollbacks(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "r"})
        status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    assert status["rollbacks"]["total_rollbacks"] == 1
    assert status["metrics"]["window_seconds"] == 300


def test_metrics_endpoint_reports_rollbacks_and_canaries(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client, percent=12.5)
        before = client.get("/metrics").text
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "r"})
        time.sleep(0.2)  # the duration histogram is fed by the event bus
        after = client.get("/metrics").text
    assert f'canaryguard_canary_percent{{deployment="{NAME}"}} 12.5' in before
    assert (
        f'canaryguard_deployment_state{{deployment="{NAME}",state="canary_active"}} 1.0' in before
    )
    assert 'canaryguard_rollbacks_total{kind="manual",outcome="completed"} 1.0' in after
    assert "canaryguard_rollback_duration_milliseconds_count 1.0" in after
    assert "canaryguard_event_bus_dropped_total 0.0" in after
    assert (
        f'canaryguard_deployment_rollbacks_total{{deployment="{NAME}",kind="manual",'
        'status="completed"} 1.0'
    ) in after


def test_metrics_endpoint_reports_the_evidence_against_a_judged_canary(
    server: RunningServer,
) -> None:
    with server.client() as client:
        setup_canary(client, percent=12.5)
        deadline = time.monotonic() + 20
        text = client.get("/metrics").text
        while "canaryguard_detector_e_value{" not in text and time.monotonic() < deadline:
            time.sleep(0.2)  # the monitor ticks every second
            text = client.get("/metrics").text
    assert f'canaryguard_detector_e_value{{deployment="{NAME}",test="errors"}}' in text


def test_the_only_server_on_its_database_leads(server: RunningServer) -> None:
    with server.client() as client:
        deadline = time.monotonic() + 20
        text = client.get("/metrics").text
        while "canaryguard_controller_leader 1.0" not in text and time.monotonic() < deadline:
            time.sleep(0.2)  # the first monitor tick claims the lease
            text = client.get("/metrics").text
    assert "canaryguard_controller_leader 1.0" in text


def test_health_and_readiness(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}


def test_openapi_documents_every_route_with_its_roles(server: RunningServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert operations
    assert all("x-canaryguard-roles" in op for op in operations)


def test_first_start_prints_the_admin_token_once(server: RunningServer) -> None:
    shown = [m for m in server.messages if "admin token" in m]
    assert len(shown) == 1
    assert server.admin_token in shown[0]
    assert (server.settings.data_dir / "admin-token").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("path", ["/api/v1/deployments", "/api/v1/tokens"])
def test_missing_token_is_401_with_a_bearer_challenge(server: RunningServer, path: str) -> None:
    response = httpx.get(f"{server.url}{path}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_nul_character_in_the_path_or_query_is_a_400(server: RunningServer) -> None:
    with server.client() as client:
        in_path = client.get("/api/v1/deployments/a%00b")
        in_query = client.get("/api/v1/events/log", params={"deployment": "a\x00b"})
    assert (in_path.status_code, in_query.status_code) == (400, 400)
    assert "NUL" in in_path.json()["detail"]


def test_nul_character_in_a_reason_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "bad\x00"})
        state = client.get(f"/api/v1/deployments/{NAME}").json()["state"]
    assert response.status_code == 400
    assert state == "canary_active"


def test_nul_character_in_a_snapshot_id_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "r", "to": "snap\x00"}
        )
    assert response.status_code in (400, 404)


def test_assignment_matches_the_local_assignment_code(server: RunningServer) -> None:
    with server.client() as client:
        deployment = setup_canary(client, percent=50)
        split = Split(
            canary_basis_points=5000,
            salt=deployment["split"]["salt"],  # type: ignore[index]
        )
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            got = client.get(
                f"/api/v1/deployments/{NAME}/assignment", params={"user_id": user}
            ).json()
            expected = choose_variant(split, user_id=user)
            assert got["variant"] == expected.value
            assert got["document"] == (DOC2 if expected is Variant.CANARY else DOC1)
            assert got["revision"] == 2


def test_assignment_honours_forced_groups(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client, percent=0)
        client.post(
            f"/api/v1/deployments/{NAME}/split", json={"percent": 0, "canary_groups": ["qa"]}
        )
        forced = client.get(
            f"/api/v1/deployments/{NAME}/assignment", params={"group": "qa", "user_id": "u"}
        )
        plain = client.get(f"/api/v1/deployments/{NAME}/assignment", params={"user_id": "u"})
    assert (forced.json()["variant"], plain.json()["variant"]) == ("canary", "stable")
    assert forced.json()["policy"]["version"] == "2"


def test_reporter_may_read_assignments_but_not_deploy(server: RunningServer) -> None:
    with server.client() as admin:
        setup_canary(admin)
        made = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()
    with server.client(made["token"]) as reporter:
        assert (
            reporter.get(
                f"/api/v1/deployments/{NAME}/assignment", params={"user_id": "u"}
            ).status_code
            == 200
        )
        assert (
            reporter.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 1}).status_code
            == 403
        )


def test_malformed_attribute_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.get(
            f"/api/v1/deployments/{NAME}/assignment", params={"attribute": "no-equals"}
        )
    assert response.status_code == 400
    assert "KEY=VALUE" in response.json()["detail"]


def observations_batch(count: int = 3, **extra: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "observations": [
            {"deployment": NAME, "variant": "canary", "second": now - i, "requests": 10, "errors": 1,
             "latency_sum_ms": 120.0, "latency_max_ms": 40.0, "histogram": {"25": 10}}
            for i in range(count)
        ],
        **extra,
    }  # fmt: skip


def test_reported_observations_show_in_the_status(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post("/api/v1/observations", json=observations_batch(3, batch_id="b-1"))
        status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    assert (response.status_code, response.json()) == (202, {"accepted": 3, "duplicate": False})
    assert (status["metrics"]["canary"]["requests"], status["metrics"]["canary"]["errors"]) == (
        30,
        3,
    )


def test_a_retried_batch_is_counted_once(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        client.post("/api/v1/observations", json=observations_batch(2, batch_id="b-2"))
        again = client.post("/api/v1/observations", json=observations_batch(2, batch_id="b-2"))
        status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    assert again.json()["duplicate"] is True
    assert status["metrics"]["canary"]["requests"] == 20


def post_gzip_json(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(
        "/api/v1/observations",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )


def test_gzip_compressed_batches_are_accepted(server: RunningServer) -> None:
    body = gzip.compress(json.dumps(observations_batch(5)).encode())
    with server.client() as client:
        setup_canary(client)
        response = post_gzip_json(client, body)
    assert (response.status_code, response.json()["accepted"]) == (202, 5)


def test_a_gzip_bomb_is_refused(server: RunningServer) -> None:
    bomb = gzip.compress(b'{"observations": [' + b" " * 20_000_000 + b"]}")
    with server.client() as client:
        response = post_gzip_json(client, bomb)
    assert response.status_code == 413


def test_corrupt_gzip_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post(
            "/api/v1/observations", content=b"not gzip", headers={"content-encoding": "gzip"}
        )
    assert response.status_code == 400


def test_a_bad_entry_refuses_the_batch_and_names_it(server: RunningServer) -> None:
    batch = observations_batch(3)
    batch["observations"][2]["errors"] = 99  # type: ignore[index]
    with server.client() as client:
        setup_canary(client)
        response = client.post("/api/v1/observations", json=batch)
        status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    assert response.status_code == 422
    assert "observations/2" in response.json()["detail"]
    assert status["metrics"]["canary"]["requests"] == 0


def post_compact(client: httpx.Client, body: bytes, *, gzipped: bool = True) -> httpx.Response:
    headers = {"content-type": CONTENT_TYPE}
    if gzipped:
        headers["content-encoding"] = "gzip"
    return client.post(
        "/api/v1/observations", content=gzip.compress(body) if gzipped else body, headers=headers
    )


def canary_requests(client: httpx.Client) -> int:
    status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    requests: int = status["metrics"]["canary"]["requests"]
    return requests


def test_a_compact_batch_counts_like_the_same_json_batch(server: RunningServer) -> None:
    batch = observations_batch(3)
    with server.client() as client:
        setup_canary(client)
        response = post_compact(client, encode(batch["observations"], batch_id="c-1"))  # type: ignore[arg-type]
        status = client.get(f"/api/v1/deployments/{NAME}/status").json()
    assert (response.status_code, response.json()) == (202, {"accepted": 3, "duplicate": False})
    assert (status["metrics"]["canary"]["requests"], status["metrics"]["canary"]["errors"]) == (
        30,
        3,
    )


def test_a_retried_compact_batch_is_counted_once(server: RunningServer) -> None:
    body = encode(observations_batch(2)["observations"], batch_id="c-2")  # type: ignore[arg-type]
    with server.client() as client:
        setup_canary(client)
        post_compact(client, body)
        again = post_compact(client, body, gzipped=False)
        counted = canary_requests(client)
    assert again.json()["duplicate"] is True
    assert counted == 20


def test_a_bad_compact_entry_refuses_the_batch_naming_it(server: RunningServer) -> None:
    rows = observations_batch(3)["observations"]
    rows[1]["errors"] = 99  # type: ignore[index]
    with server.client() as client:
        setup_canary(client)
        response = post_compact(client, encode(rows))  # type: ignore[arg-type]
        counted = canary_requests(client)
    assert response.status_code == 422
    assert "observation 1: errors (99) exceed requests (10)" in response.json()["detail"]
    assert counted == 0


def test_a_truncated_compact_batch_is_refused(server: RunningServer) -> None:
    body = encode(observations_batch(3)["observations"])  # type: ignore[arg-type]
    with server.client() as client:
        setup_canary(client)
        response = post_compact(client, body[:-5])
        counted = canary_requests(client)
    assert response.status_code == 422
    assert "the batch ends early" in response.json()["detail"]
    assert counted == 0


def test_a_compact_batch_for_an_unknown_deployment_is_refused(server: RunningServer) -> None:
    rows = observations_batch(1)["observations"]
    rows[0]["deployment"] = "no/such"  # type: ignore[index]
    with server.client() as client:
        response = post_compact(client, encode(rows))  # type: ignore[arg-type]
    assert response.status_code == 404
    assert "no/such" in response.json()["detail"]


def test_observations_in_another_media_type_get_415(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(
            "/api/v1/observations", content=b"a,b,c", headers={"content-type": "text/csv"}
        )
    assert response.status_code == 415
    assert CONTENT_TYPE in response.json()["detail"]


def test_a_body_of_several_gzip_members_is_inflated_whole(server: RunningServer) -> None:
    raw = json.dumps(observations_batch(4)).encode()
    body = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    with server.client() as client:
        setup_canary(client)
        response = post_gzip_json(client, body)
    assert (response.status_code, response.json()["accepted"]) == (202, 4)


def test_a_gzip_body_of_too_many_members_is_refused(server: RunningServer) -> None:
    raw = json.dumps(observations_batch(1)).encode()
    body = b"".join(gzip.compress(raw[i : i + 1]) for i in range(len(raw)))  # one per byte
    with server.client() as client:
        setup_canary(client)
        response = post_gzip_json(client, body)
        counted = canary_requests(client)
    assert response.status_code == 400
    assert counted == 0


def test_a_gzip_body_cut_short_is_refused(server: RunningServer) -> None:
    body = gzip.compress(json.dumps(observations_batch(4)).encode())
    with server.client() as client:
        setup_canary(client)
        response = post_gzip_json(client, body[: len(body) // 2])
        counted = canary_requests(client)
    assert response.status_code == 400
    assert counted == 0


def test_observations_for_an_unknown_deployment_are_refused(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/api/v1/observations", json=observations_batch(1))
    assert response.status_code == 404


def test_a_policy_nested_too_deep_is_refused_and_not_stored(server: RunningServer) -> None:
    deep = "[" * 300 + "]" * 300
    body = '{"document": {"a": ' + deep + "}}"
    with server.client() as client:
        response = client.post(
            "/api/v1/policies/deep/versions",
            content=body,
            headers={"content-type": "application/json"},
        )
        listed = client.get("/api/v1/policies/deep/versions")
    assert response.status_code == 400
    assert "nested deeper than" in response.json()["detail"]
    assert listed.status_code == 404 or listed.json() == []


def test_a_compressed_policy_inflating_past_the_body_limit_is_refused(
    server: RunningServer,
) -> None:
    document = {"blob": "x" * (3 * 1024 * 1024)}
    body = gzip.compress(json.dumps({"document": document}).encode())
    with server.client() as client:
        response = client.post(
            "/api/v1/policies/big/versions",
            content=body,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
    assert response.status_code == 413


def test_a_chunked_body_over_the_limit_gets_413(server: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(3 * 1024):
            yield b"x" * 1024
        yield b'"}'

    with server.client() as client:
        response = client.post(
            "/api/v1/deployments", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_schema_whose_ref_points_to_nothing_is_refused_when_set(server: RunningServer) -> None:
    with server.client() as client:
        response = client.put("/api/v1/policies/sp/schema", json={"schema": {"$ref": "#/nope"}})
    assert response.status_code == 400
    assert "points to nothing" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/policies/pol/versions", '{"document": {"a": "\\ud800"}}'),
        ("/api/v1/deployments", '{"name": "de", "stable": "sec@1", "config": {"x\\ud800": 1}}'),
        (f"/api/v1/deployments/{NAME}/snapshots", '{"metadata": {"k\\ud800": "v"}}'),
        (f"/api/v1/deployments/{NAME}/snapshots", '{"metadata": {"k": "\\ud800"}}'),
    ],
)
def test_text_with_a_lone_surrogate_gets_a_client_error(
    server: RunningServer, path: str, body: str
) -> None:
    with server.client() as client:
        setup_canary(client)
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text


def test_a_canary_group_with_a_lone_surrogate_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        setup_canary(client)
        client.post(f"/api/v1/deployments/{NAME}/abort", json={"reason": "again"})
        response = client.post(
            f"/api/v1/deployments/{NAME}/canary",
            content='{"policy": "sec@2", "percent": 10, "canary_groups": ["g\\ud800"]}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]


@pytest.mark.parametrize("percent", [True, "25", "NaN"])
def test_a_canary_share_that_is_not_a_number_is_refused(
    server: RunningServer, percent: object
) -> None:
    with server.client() as client:
        assert client.post("/api/v1/policies/sec/versions", json={"document": DOC1}).is_success
        assert client.post("/api/v1/policies/sec/versions", json={"document": DOC2}).is_success
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        response = client.post(
            f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": percent}
        )
        deployment = client.get(f"/api/v1/deployments/{NAME}").json()
    assert response.status_code == 422
    assert deployment["canary"] is None


def test_a_token_lifetime_that_is_not_a_number_is_refused(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post(
            "/api/v1/tokens", json={"name": "ci", "role": "viewer", "expires_in_days": True}
        )
    assert response.status_code == 422


def test_no_third_party_api_pages_share_the_dashboards_origin(server: RunningServer) -> None:
    # Swagger UI and ReDoc load scripts from a CDN; on this origin they could read the token
    with server.client() as client:
        assert [client.get(path).status_code for path in ("/docs", "/redoc")] == [404, 404]
        assert client.get("/openapi.json").status_code == 200
