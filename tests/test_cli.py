"""The CLI as a user runs it: a separate process talking to a real server over HTTP."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from canaryguard.cli.client import ApiClient
from canaryguard.cli.output import Out
from canaryguard.wiring import Settings
from tests.servers import RunningServer, free_port

EXAMPLES = resources.files("canaryguard") / "examples"
NAME = "payments/security"


def cli(
    server: RunningServer | None, *args: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env["COLUMNS"] = "200"
    if server is not None:
        env["CANARYGUARD_URL"] = server.url
        env["CANARYGUARD_TOKEN"] = token if token is not None else server.admin_token
    return subprocess.run(
        [sys.executable, "-m", "canaryguard", *args],
        capture_output=True, text=True, env=env, input=stdin, timeout=60, check=False,
    )  # fmt: skip


def ok(server: RunningServer, *args: str) -> Any:
    result = cli(server, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def example(name: str) -> str:
    return str(Path(str(EXAMPLES / name)))


def start_canary(server: RunningServer) -> None:
    ok(
        server,
        "policy",
        "schema",
        "set",
        "payments-security",
        example("security-policy.schema.json"),
    )
    ok(server, "policy", "push", example("security-v1.yaml"), "--name", "payments-security")
    ok(server, "policy", "push", example("security-v2.toml"), "--name", "payments-security")
    ok(server, "deploy", "create", NAME, "--stable", "payments-security@1")
    ok(server, "deploy", "canary", NAME, "--policy", "payments-security@2", "--percent", "10")


def test_canary_and_rollback_from_the_command_line(server: RunningServer) -> None:
    start_canary(server)
    record = ok(server, "rollback", NAME, "--reason", "handshake failures", "--yes")
    status = ok(server, "status", NAME)
    assert record["status"] == "completed"
    assert (status["deployment"]["state"], status["rollbacks"]["total_rollbacks"]) == (
        "rolled_back",
        1,
    )


def test_listing_commands_print_json(server: RunningServer) -> None:
    start_canary(server)
    assert [p["name"] for p in ok(server, "policy", "list")] == ["payments-security"]
    assert [s["kind"] for s in ok(server, "snapshot", "list", NAME)] == ["before_canary"]
    assert ok(server, "audit", "verify")["ok"] is True
    assert ok(server, "config", "show", NAME)["max_snapshots"] == 50
    assert (
        ok(server, "events", NAME, "--limit", "3")[0]["type"] == "io.canaryguard.deployment.created"
    )
    assert {t["name"] for t in ok(server, "token", "list")} == {"admin"}


def test_people_get_tables(server: RunningServer) -> None:
    start_canary(server)
    result = cli(server, "status")
    assert result.returncode == 0
    assert "canary_active" in result.stdout
    assert NAME in result.stdout


def test_policy_diff_shows_changed_fields(server: RunningServer) -> None:
    start_canary(server)
    changes = ok(server, "policy", "diff", "payments-security@1", "payments-security@2")
    assert "/security/tls/min_version" in {c["path"] for c in changes}


def test_config_set_parses_values(server: RunningServer) -> None:
    start_canary(server)
    ok(server, "config", "set", NAME, "error_rate_threshold=0.02", "auto_rollback_enabled=false")
    shown = ok(server, "config", "show", NAME)
    assert (shown["error_rate_threshold"], shown["auto_rollback_enabled"]) == (0.02, False)


def test_snapshot_create_pin_and_diff(server: RunningServer) -> None:
    start_canary(server)
    made = ok(server, "snapshot", "create", NAME, "--note", "before lunch", "--pin")
    first = ok(server, "snapshot", "list", NAME)[0]["id"]
    assert made["note"] == "before lunch"
    assert ok(server, "snapshot", "pin", made["id"], "--off")["pinned"] is False
    assert "/note" in {c["path"] for c in ok(server, "snapshot", "diff", first, made["id"])}


def test_token_create_then_use_then_revoke(server: RunningServer) -> None:
    made = ok(server, "token", "create", "--name", "reader", "--role", "viewer")
    assert cli(server, "status", token=made["token"]).returncode == 0
    ok(server, "token", "revoke", "reader")
    assert cli(server, "status", token=made["token"]).returncode == 4


def test_bad_token_exits_4_with_a_short_message(server: RunningServer) -> None:
    result = cli(server, "status", token="cgt_not-a-real-token-at-all")
    assert result.returncode == 4
    assert "unknown, revoked or expired" in result.stderr
    assert "Traceback" not in result.stderr


def test_role_without_permission_exits_4(server: RunningServer) -> None:
    made = ok(server, "token", "create", "--name", "watcher", "--role", "viewer")
    result = cli(server, "deploy", "create", "x", "--stable", "a@1", token=made["token"])
    assert result.returncode == 4
    assert "viewer role may not" in result.stderr


def test_unknown_deployment_exits_1(server: RunningServer) -> None:
    result = cli(server, "status", "ghost")
    assert result.returncode == 1
    assert "no deployment named 'ghost'" in result.stderr


def test_conflict_exits_3(server: RunningServer) -> None:
    start_canary(server)
    result = cli(server, "deploy", "split", NAME, "--percent", "20", "--expect-revision", "1")
    assert result.returncode == 3
    assert "revision 2, not 1" in result.stderr


def test_server_down_exits_1_and_says_so() -> None:
    down = RunningServer(
        url=f"http://127.0.0.1:{free_port()}", admin_token="cgt_x", settings=Settings(), messages=[]
    )
    result = cli(down, "status")
    assert result.returncode == 1
    assert "cannot reach canaryguard" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_policy_file_is_refused_before_sending(
    server: RunningServer, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("security: [\n")
    result = cli(server, "policy", "push", str(broken), "--name", "sec")
    assert result.returncode == 1
    assert "invalid YAML" in result.stderr
    assert ok(server, "policy", "list") == []


def test_rollback_without_yes_waits_for_a_confirmation(server: RunningServer) -> None:
    start_canary(server)
    pending = ok(server, "rollback", NAME, "--reason", "r")
    assert pending["status"] == "pending"
    assert ok(server, "status", NAME)["deployment"]["state"] == "canary_active"
    done = ok(server, "rollback", "confirm", pending["id"])
    assert (done["status"], done["confirmed_by"]) == ("completed", "admin")
    assert ok(server, "status", NAME)["deployment"]["state"] == "rolled_back"


def test_a_cancelled_rollback_changes_nothing(server: RunningServer) -> None:
    start_canary(server)
    pending = ok(server, "rollback", NAME, "--reason", "r")
    assert ok(server, "rollback", "cancel", pending["id"])["status"] == "cancelled"
    assert ok(server, "status", NAME)["deployment"]["state"] == "canary_active"
    again = cli(server, "rollback", "confirm", pending["id"])
    assert again.returncode == 3
    assert "cancelled, not pending" in again.stderr


def test_rollback_list_and_show(server: RunningServer) -> None:
    start_canary(server)
    record = ok(server, "rollback", NAME, "--reason", "r", "--yes")
    assert [r["id"] for r in ok(server, "rollback", "list", NAME)] == [record["id"]]
    assert ok(server, "rollback", "show", record["id"])["reason"] == "r"


def test_audit_verify_exits_0_when_intact(server: RunningServer) -> None:
    result = cli(server, "audit", "verify")
    assert result.returncode == 0
    assert "intact" in result.stdout


def test_usage_error_exits_2() -> None:
    result = cli(None, "deploy", "split")
    assert result.returncode == 2


def test_events_follow_prints_live_events(server: RunningServer) -> None:
    start_canary(server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    env.update(CANARYGUARD_URL=server.url, CANARYGUARD_TOKEN=server.admin_token)
    follower = subprocess.Popen(
        [sys.executable, "-m", "canaryguard", "--json", "events", NAME, "--follow", "--after", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert follower.stdout is not None
    with follower.stdout:
        try:
            first = json.loads(follower.stdout.readline())
        finally:
            follower.terminate()
            follower.wait(10)
    assert (first["type"], first["subject"]) == ("io.canaryguard.deployment.created", NAME)


def test_a_staged_rollback_from_the_command_line_runs_to_the_end(server: RunningServer) -> None:
    start_canary(server)
    ok(
        server, "config", "set", NAME,
        'staged_rollback={"stage_interval_seconds": 0.2, "evaluate_between_stages": false}',
    )  # fmt: skip
    result = cli(server, "rollback", NAME, "--reason", "r", "--staged", "--yes")
    assert result.returncode == 0, result.stderr
    assert "stages" in result.stdout  # the progress bar
    assert "rolled back" in result.stdout
    [record] = ok(server, "rollback", "list", NAME, "--status", "completed", "--kind", "manual")
    assert ok(server, "rollback", "list", NAME, "--since", "2999-01-01T00:00:00") == []
    assert record["mode"] == "staged"
    shown = ok(server, "rollback", "show", record["id"])
    kinds = [e["type"].removeprefix("io.canaryguard.") for e in shown["timeline"]]
    assert kinds[0] == "rollback.manual_initiated"
    assert kinds[-1] == "rollback.completed"
    assert "rollback.progress" in kinds


@contextmanager
def stub_server(answer: bytes) -> Iterator[str]:
    """A loopback HTTP server that reads each request's head and sends ``answer`` (raw bytes;
    empty: it closes the connection without answering); yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def http_answer(status: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's stderr, asserted to be a single ``error: …`` line (no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_server_without_a_scheme_exits_2_suggesting_http() -> None:
    result = cli(None, "--server", "127.0.0.1:18741", "--token", "cgt_x", "status", "team/app")
    line = one_line_error(result)
    assert result.returncode == 2
    assert "'127.0.0.1:18741'" in line
    assert "http://127.0.0.1:18741" in line


def test_server_with_an_ftp_scheme_exits_2_naming_it() -> None:
    result = cli(None, "--server", "ftp://127.0.0.1:18741", "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 2
    assert "'ftp://127.0.0.1:18741'" in line


def test_server_url_that_does_not_parse_exits_2_naming_it() -> None:
    result = cli(None, "--server", "http://[::1", "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 2
    assert "'http://[::1'" in line


def test_server_url_from_the_environment_is_checked_too() -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "canaryguard", "--token", "cgt_x", "status"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CANARYGUARD_URL": "localhost:8000"},
    )  # fmt: skip
    line = one_line_error(env_result)
    assert env_result.returncode == 2
    assert "CANARYGUARD_URL" in line


def test_non_ascii_token_exits_4_saying_tokens_are_printable_ascii() -> None:
    with stub_server(http_answer("200 OK", "application/json", b"[]")) as url:
        result = cli(None, "--server", url, "--token", "é", "status")
    line = one_line_error(result)
    assert result.returncode == 4
    assert "printable ASCII" in line


def test_server_closing_without_an_answer_exits_1() -> None:
    with stub_server(b"") as url:
        result = cli(None, "--server", url, "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 1
    assert f"canaryguard at {url} closed the connection without answering" in line


def test_a_success_whose_body_is_not_json_exits_1() -> None:
    page = b"<html><body>\n<h1>Welcome to nginx!</h1>\n</body></html>"
    with stub_server(http_answer("200 OK", "text/html", page)) as url:
        result = cli(None, "--server", url, "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 1
    assert "not JSON" in line
    assert "HTTP 200" in line


def test_an_error_whose_body_is_not_an_object_exits_1_with_its_status() -> None:
    with stub_server(http_answer("502 Bad Gateway", "application/json", b"[]")) as url:
        result = cli(None, "--server", url, "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 1
    assert line.endswith("(HTTP 502)")


def test_an_error_page_of_several_lines_is_one_line() -> None:
    page = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>bad</body>\n</html>"
    with stub_server(http_answer("502 Bad Gateway", "text/html", page)) as url:
        result = cli(None, "--server", url, "--token", "cgt_x", "status")
    line = one_line_error(result)
    assert result.returncode == 1
    assert "502 Bad Gateway" in line


def test_events_follow_from_a_server_that_is_no_event_stream_exits_1() -> None:
    page = b"<html><body>hello</body></html>"
    with stub_server(http_answer("200 OK", "text/html", page)) as url:
        result = cli(None, "--server", url, "--token", "cgt_x", "events", "--follow")
    line = one_line_error(result)
    assert result.returncode == 1
    assert "not an event stream" in line


def test_an_undecodable_admin_token_file_exits_4_saying_tokens_are_printable_ascii(
    tmp_path: Path,
) -> None:
    (tmp_path / "admin-token").write_bytes(b"cgt_\xff\xfe")
    with stub_server(http_answer("200 OK", "application/json", b"[]")) as url:
        result = cli(None, "--server", url, "--data-dir", str(tmp_path), "status")
    line = one_line_error(result)
    assert result.returncode == 4
    assert "printable ASCII" in line


def test_an_error_message_is_printed_as_text_not_markup() -> None:
    printed = io.StringIO()
    out = Out(errors=Console(file=printed, width=200))
    out.error("policy 'a[/x]b' and [bold]c")
    assert printed.getvalue().strip() == "error: policy 'a[/x]b' and [bold]c"


class _Stop(Exception):
    pass


def test_a_stream_that_ends_without_events_is_asked_again_after_the_server_s_retry() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        b"retry: 2500\n\n"
    )
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise _Stop

    with stub_server(answer) as url:
        api = ApiClient(url, "cgt_x", sleep=sleep)
        with pytest.raises(_Stop):
            list(api.stream_events(deployment=None, after=None))
    assert pauses == [2.5, 2.5, 2.5]


def test_table_cells_are_shown_as_written_not_read_as_markup() -> None:
    # cells hold names, reasons and receivers' answers: "[/x]" must not stop the command, and
    # "[link=…]" must not plant a hyperlink
    buffer = io.StringIO()
    out = Out(console=Console(file=buffer, width=200, color_system=None))
    cells = ["[/x] closing tag", "[link=https://evil.example]click[/link]", "[error]"]
    out.table(cells, "t", ("a", "b", "c"), [cells])
    text = buffer.getvalue()
    assert all(cell in text for cell in cells)


def test_notifications_lists_no_channels_on_a_server_without_them(server: RunningServer) -> None:
    assert json.loads(cli(server, "--json", "notifications").stdout) == []
