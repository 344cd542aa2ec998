"""Alerts end to end: a served instance with a channel file, a rollback through the API, and
the signed webhook on a receiver on loopback; on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.receivers import Receiver
from tests.servers import running_server
from tests.test_cli import cli
from tests.test_notifiers import SECRET
from tests.test_serve import run_serve

NAME = "checkout"
V1 = {"rate_limit": 100}
V2 = {"rate_limit": 50}


def channel_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "notifications.toml"
    path.write_text(
        f"""
[[channels]]
name = "ops"
kind = "webhook"
url = "{url}/hooks/canaryguard"
secret_env = "TEST_OPS_WEBHOOK_SECRET"
min_level = "warning"
"""
    )
    return path


async def test_a_rollback_through_the_api_reaches_the_webhook_signed(
    serve_db: str | None,
    tmp_path: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_OPS_WEBHOOK_SECRET", SECRET)
    with running_server(
        tmp_path / "data", serve_db, notifications_file=channel_file(tmp_path, receiver.url)
    ) as server:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as api:
            for document in (V1, V2):
                answer = await api.post(
                    "/api/v1/policies/sec/versions", json={"document": document}
                )
                assert answer.status_code == 201
            await api.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
            await api.post(
                f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 10}
            )
            rolled = await api.post(
                f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "errors up"}
            )
            assert rolled.status_code in (200, 201), rolled.text
            await wait_for(receiver)
            [request] = receiver.requests  # warning and up: the canary's start was info
            payload = Webhook(SECRET).verify(request.body, request.headers)
            assert payload["type"] == "io.canaryguard.rollback.manual_initiated"
            assert payload["subject"] == NAME
            assert payload["canaryguardlevel"] == "warning"
            assert "errors up" in payload["canaryguardmessage"]
            assert request.headers["webhook-id"].startswith(f"evt_{payload['id']}_")
            channel = await channel_once_past(api, int(payload["id"]))
            assert (channel["name"], channel["kind"], channel["sent"], channel["failed"]) == (
                "ops",
                "webhook",
                1,
                0,
            )
            table = await asyncio.to_thread(cli, server, "notifications")
            assert table.returncode == 0, table.stderr
            assert "│ ops" in table.stdout
            assert "webhook" in table.stdout
            metrics = (await api.get("/metrics")).text
            assert 'canaryguard_notifications_sent_total{channel="ops"} 1.0' in metrics
    assert any("notifications to ops (warning and up)" in m for m in server.messages)


async def channel_once_past(api: httpx.AsyncClient, seq: int) -> dict[str, Any]:
    """The channel's status once its cursor has passed ``seq`` (it moves just after the send)."""
    for _ in range(150):
        [channel] = (await api.get("/api/v1/notifications")).json()
        if channel["cursor"] is not None and channel["cursor"] >= seq:
            return channel  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"the channel's cursor did not pass {seq}: {channel}")


async def wait_for(receiver: Receiver, seconds: float = 15) -> None:
    async with asyncio.timeout(seconds):
        await receiver.arrived.wait()


def test_a_bad_channel_file_stops_serve_with_one_line_before_anything_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notifications.toml"
    path.write_text('[[channels]]\nname = "ops"\nkind = "pager"\n')
    result = run_serve("--notifications", str(path), data_dir=tmp_path / "data")
    assert result.returncode == 1
    assert "'ops'" in result.stderr
    assert "pager" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "canaryguard.db").exists()


def test_a_channel_whose_secret_variable_is_unset_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "notifications.toml"
    path.write_text(
        '[[channels]]\nname = "ops"\nkind = "webhook"\nurl = "http://127.0.0.1:9/h"\n'
        'secret_env = "CG_TEST_NO_SUCH_VARIABLE"\n'
    )
    result = run_serve("--notifications", str(path), data_dir=tmp_path / "data")
    assert result.returncode == 1
    assert "CG_TEST_NO_SUCH_VARIABLE" in result.stderr
