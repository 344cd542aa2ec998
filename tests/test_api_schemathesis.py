"""Schemathesis against the served /openapi.json with an admin token: no 5xx, and every
response matches the schema its operation declares (bounded examples, on both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import PG_DSN, require_postgres
from tests.servers import RunningServer, running_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    if request.param == "sqlite":
        with running_server(data_dir) as server:
            yield server
        return
    require_postgres()
    schema = "t_schemathesis"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    url = (
        PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
        + f"?options=-csearch_path%3D{schema}"
    )
    try:
        with running_server(data_dir, url) as server:
            yield server
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


SKIPPED = {
    ("GET", "/api/v1/events"),  # an endless stream; tested in test_sse.py
    ("GET", "/api/v1/state"),  # likewise
    ("DELETE", "/api/v1/tokens/{name}"),  # would revoke the token it runs with
}


def test_no_server_error_and_responses_match_their_schema(live: RunningServer) -> None:
    with live.client() as client:  # something to find: a policy, a deployment with a canary
        client.post("/api/v1/policies/sec/versions", json={"document": {"v": 1}})
        client.post("/api/v1/policies/sec/versions", json={"document": {"v": 2}})
        client.post("/api/v1/deployments", json={"name": "shop", "stable": "sec@1"})
        client.post("/api/v1/deployments/shop/canary", json={"policy": "sec@2", "percent": 5})
    api = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    headers = {"Authorization": f"Bearer {live.admin_token}"}
    failures: list[str] = []
    tested = 0
    for result in api.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err would raise here, as wanted
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        tested += 1

        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=operation.as_strategy())
        def exercise(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(
                base_url=live.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        try:
            exercise()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert tested > 25
    assert failures == []
