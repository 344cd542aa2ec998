"""The client SDK against a real server: local assignment, reporting, push updates, fail-static,
retries and drops, fork safety."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.server
import json
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytest

from canaryguard.client import AsyncClient, Client, NotReady
from canaryguard.client._client import _HandshakeGate
from canaryguard.client._state import Assignment, DeploymentState, PolicyVersion
from canaryguard.domain import observation_batch
from canaryguard.domain.assignment import Split, Variant
from tests.certificates import self_signed
from tests.servers import RunningServer, free_port, running_server, server_process

NAME = "payments/security"


def seed(server: RunningServer, percent: float = 50) -> str:
    """A deployment with a canary; returns a reporter token."""
    with server.client() as admin:
        admin.post("/api/v1/policies/sec/versions", json={"document": {"tls": "1.2"}})
        admin.post("/api/v1/policies/sec/versions", json={"document": {"tls": "1.3"}})
        admin.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        admin.post(
            f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": percent}
        )
        token: str = admin.post("/api/v1/tokens", json={"name": "sdk", "role": "reporter"}).json()[
            "token"
        ]
    return token


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_local_assignment_matches_the_server(server: RunningServer) -> None:
    token = seed(server)
    with Client(server.url, token, [NAME]) as client, server.client() as admin:
        for user in [f"user-{i}" for i in range(40)]:
            local = client.assign(NAME, user_id=user)
            remote = admin.get(
                f"/api/v1/deployments/{NAME}/assignment", params={"user_id": user}
            ).json()
            assert (local.variant.value, local.document, local.revision) == (
                remote["variant"], remote["document"], remote["revision"]
            )  # fmt: skip


def test_recorded_outcomes_reach_the_server(server: RunningServer) -> None:
    token = seed(server)
    with Client(server.url, token, [NAME], flush_interval=0.2) as client:
        assignment = client.assign(NAME, user_id="alice")
        for i in range(20):
            client.record(assignment, ok=i % 4 != 0, latency_ms=10.0 + i)
    with server.client() as admin:
        metrics = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"][
            assignment.variant.value
        ]
    assert (metrics["requests"], metrics["errors"]) == (20, 5)


def test_track_counts_an_exception_as_an_error(server: RunningServer) -> None:
    token = seed(server)
    with Client(server.url, token, [NAME]) as client:
        assignment = client.assign(NAME, user_id="bob")
        with pytest.raises(ZeroDivisionError), client.track(assignment):
            _ = 1 / 0
        with client.track(assignment):
            pass
    with server.client() as admin:
        metrics = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"][
            assignment.variant.value
        ]
    assert (metrics["requests"], metrics["errors"]) == (2, 1)


def test_a_split_change_and_a_rollback_reach_the_client(server: RunningServer) -> None:
    token = seed(server, percent=10)
    with Client(server.url, token, [NAME]) as client, server.client() as admin:
        start = client.revision(NAME)
        admin.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 100})
        eventually(lambda: client.assign(NAME, user_id="x").variant.value == "canary")
        admin.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "bad"})
        eventually(lambda: client.assign(NAME, user_id="x").document == {"tls": "1.2"})
        assert (client.revision(NAME) or 0) >= (start or 0) + 2


def test_an_older_revision_is_never_applied(server: RunningServer) -> None:
    token = seed(server)
    with Client(server.url, token, [NAME]) as client:
        current = client.revision(NAME) or 0
        salt = client._states[NAME].split.salt  # the same deployment, an older revision
        policy = PolicyVersion("sec", "1", "sha256:x", {"old": True})
        client._apply(DeploymentState(NAME, current - 1, Split(salt=salt), policy, None))
        assert client.revision(NAME) == current
        assert client.assign(NAME, user_id="u").document != {"old": True}


def test_a_replaced_incarnation_is_never_taken_back() -> None:
    client = Client("http://127.0.0.1:9", "cgt_x", [NAME], start=False)
    stable = PolicyVersion("sec", "1", "sha256:x", {"tls": "1.2"})
    old, new = Split(salt="old-server"), Split(salt="new-server")
    client._apply(DeploymentState(NAME, 7, old, stable, None))
    client._apply(DeploymentState(NAME, 2, new, stable, None))  # set up again: counts from 1
    client._apply(DeploymentState(NAME, 8, old, stable, None))  # the old server, still up
    assert (client.revision(NAME), client._states[NAME].split.salt) == (2, "new-server")
    client.close()


def test_a_restarted_client_serves_from_its_cache_while_the_server_is_down(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        token = seed(server, percent=100)
        with Client(server.url, token, [NAME], cache_dir=tmp_path / "cache") as client:
            before = client.assign(NAME, user_id="u")
    # the server is gone now
    with Client(server.url, token, [NAME], cache_dir=tmp_path / "cache", timeout=0.5) as restarted:
        after = restarted.assign(NAME, user_id="u")
    assert (after.variant, after.document, after.revision) == (
        before.variant,
        before.document,
        before.revision,
    )


def test_a_cache_from_another_server_gives_way_to_the_server_s_lower_revision(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "old") as old:
        token = seed(old, percent=100)
        with old.client() as admin:
            for percent in (10, 20, 30, 40):  # the old server's revisions run ahead
                admin.post(f"/api/v1/deployments/{NAME}/split", json={"percent": percent})
        with Client(old.url, token, [NAME], cache_dir=tmp_path / "cache") as client:
            cached = client.revision(NAME) or 0
    with running_server(tmp_path / "new") as new:  # set up again: revisions start over
        token = seed(new, percent=0)
        with Client(new.url, token, [NAME], cache_dir=tmp_path / "cache") as client:
            served = client.assign(NAME, user_id="u")
    assert served.revision < cached
    assert (served.variant.value, served.document) == ("stable", {"tls": "1.2"})


def test_without_server_or_cache_assignment_says_not_ready(tmp_path: Path) -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", "cgt_x", [NAME], timeout=0.3) as client,
        pytest.raises(NotReady),
    ):
        client.assign(NAME, user_id="u")


def test_a_running_client_keeps_serving_when_the_server_dies(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        token = seed(server)
        client = Client(server.url, token, [NAME], timeout=0.5, poll_interval=0.2)
        before = client.assign(NAME, user_id="u")
    time.sleep(0.5)
    assert client.assign(NAME, user_id="u") == before
    client.close()


def test_unsendable_batches_are_retried_then_dropped_and_counted(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        token = seed(server)
        client = Client(
            server.url, token, [NAME], timeout=0.3, max_retries=2, start=True, flush_interval=60
        )
        assignment = client.assign(NAME, user_id="u")
    for _ in range(3):
        client.record(assignment, ok=True, latency_ms=5)
    for _ in range(3):  # the first try and two retries
        client.flush()
    assert (
        client.stats.batches_retried,
        client.stats.batches_dropped,
        client.stats.observations_dropped,
    ) == (2, 1, 1)
    client.close()


NAMES = {"canaryguard-follow", "canaryguard-send"}  # the client's threads


def in_a_fork(
    child: Callable[[], bool], timeout: float = 30, after: Callable[[], object] | None = None
) -> int:
    """Run ``child`` in a forked process (and ``after`` in this one once it is forked): 0 when
    it returned True, 1 when False or it raised, -9 when it had to be killed (a child that
    hangs must fail the test, not hold the run)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if child() else 1
        finally:
            os._exit(code)
    if after is not None:
        after()
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.02)


@pytest.fixture
def server_apart(serve_db: str | None, tmp_path: Path) -> Iterator[RunningServer]:
    """A server in a process of its own, so that a fork copies the test and its client only,
    as in a pre-forking application, and not a whole server's threads."""
    with server_process(tmp_path / "data", serve_db) as running:
        yield running


def test_a_forked_worker_reports_its_own_outcomes(server_apart: RunningServer) -> None:
    token = seed(server_apart, percent=0)
    with Client(server_apart.url, token, [NAME], flush_interval=0.2) as client:
        parent = client.assign(NAME, user_id="parent")
        client.record(parent, ok=True, latency_ms=1)  # must not be sent twice by the child

        def worker() -> bool:
            assignment = client.assign(NAME, user_id="child")
            for _ in range(7):
                client.record(assignment, ok=True, latency_ms=3)
            client.close()
            return client.stats.batches_sent >= 1

        assert in_a_fork(worker) == 0
    with server_apart.client() as admin:
        metrics = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"]["stable"]
    assert metrics["requests"] == 8


def test_a_forked_child_follows_the_state_before_it_uses_the_client(
    server_apart: RunningServer,
) -> None:
    token = seed(server_apart, percent=100)
    with Client(server_apart.url, token, [NAME], flush_interval=60) as client:
        rolled_back = (client.revision(NAME) or 0) + 1

        def idle_worker() -> bool:  # never assigns: a pre-forked worker waiting for requests
            deadline = time.monotonic() + 20
            while (client.revision(NAME) or 0) < rolled_back:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
            return True

        with server_apart.client() as admin:
            pid_exit = in_a_fork(idle_worker, after=lambda: admin.post(
                f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "bad"}
            ))  # fmt: skip
    assert pid_exit == 0


def test_a_child_closes_the_client_though_the_parent_held_its_stop_event_at_the_fork(
    receiver: str,
) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, timeout=0.3)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:  # inside the stop event's bookkeeping, as a waiting thread may be
        with client._stop._cond:  # type: ignore[attr-defined]
            held.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    try:

        def child() -> bool:
            client.close()
            return not any(t.name in NAMES for t in threading.enumerate())

        assert in_a_fork(child, timeout=15) == 0
    finally:
        release.set()
        thread.join()
        client.close()


def test_a_client_makes_its_tls_context_once(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every poll, stream and send reuses the context made at construction: a forked child that
    made one of its own could deadlock on a lock another thread held inside OpenSSL."""
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, poll_interval=0.05)
    made: list[object] = []
    real = ssl.create_default_context

    def counted(*args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    try:
        eventually(lambda: client.stats.stream_reconnects >= 3)  # the receiver has no GET
        client.record(_assignment(), ok=True, latency_ms=1)
        client.flush()
    finally:
        client.close()
    assert made == []


async def test_async_client_assigns_and_reports_without_blocking_the_loop(
    server: RunningServer,
) -> None:
    token = seed(server, percent=100)
    async with AsyncClient(server.url, token, [NAME], flush_interval=60) as client:
        assignment = client.assign(NAME, user_id="async-user")
        async with client.track(assignment):
            await asyncio.sleep(0.01)
        with pytest.raises(ValueError, match="inside"):
            async with client.track(assignment):
                raise ValueError("inside")
    with server.client() as admin:
        metrics = admin.get(f"/api/v1/deployments/{NAME}/status").json()["metrics"]["canary"]
    assert (assignment.variant.value, assignment.document) == ("canary", {"tls": "1.3"})
    assert (metrics["requests"], metrics["errors"]) == (2, 1)
    assert metrics["latency_max_ms"] >= 10


def test_close_ends_the_follower_thread_and_its_stream(server: RunningServer) -> None:
    token = seed(server)
    client = Client(
        server.url, token, [NAME], timeout=30
    )  # a long timeout: close must not wait it out
    eventually(lambda: client._live_stream is not None)
    client.close()
    assert not any(thread.is_alive() for thread in client._threads)


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An observations endpoint that takes only JSON (as a server without compact batches
    would), and notes what arrived on which connection."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    seen: ClassVar[list[tuple[str, int, bytes]]] = []
    takes_compact: ClassVar[bool] = False

    def do_POST(self) -> None:
        body = gzip.decompress(self.rfile.read(int(self.headers["content-length"])))
        media_type = self.headers["content-type"]
        self.seen.append((media_type, self.client_address[1], body))
        status, answer = (202, b'{"accepted": 1, "duplicate": false}')
        if media_type != "application/json" and not self.takes_compact:
            status, answer = 415, b'{"detail": "observations come as application/json"}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: object) -> None:
        pass


@contextmanager
def _serving(
    handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A loopback HTTP server of ``handler`` on a thread (HTTPS with ``tls``); yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.seen = []
    _Receiver.takes_compact = False
    with _serving(_Receiver) as url:
        yield url


def _assignment() -> Assignment:
    return Assignment(NAME, 3, Variant.CANARY, PolicyVersion("sec", "2", "h", {"tls": "1.3"}))


def test_the_sdk_sends_compact_batches_of_what_it_recorded(receiver: str) -> None:
    _Receiver.takes_compact = True
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False)
    for ok in (True, False, False):
        client.record(_assignment(), ok=ok, latency_ms=5)
    client.flush()
    client.close()
    [(media_type, _, body)] = _Receiver.seen
    batch = observation_batch.decode(body, max_rows=10)
    assert media_type == observation_batch.CONTENT_TYPE
    assert (batch.names, list(batch.revision), list(batch.requests), list(batch.errors)) == (
        [NAME],
        [3],
        [3],
        [2],
    )


def test_a_server_without_compact_batches_gets_the_same_batch_as_json(receiver: str) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False)
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    kinds = [media_type for media_type, _, _ in _Receiver.seen]
    assert kinds == [observation_batch.CONTENT_TYPE, "application/json", "application/json"]
    first_compact = observation_batch.decode(_Receiver.seen[0][2], max_rows=10)
    assert json.loads(_Receiver.seen[1][2])["batch_id"] == first_compact.batch_id  # a retry
    assert (client.stats.batches_sent, client.stats.batches_dropped) == (2, 0)
    client.close()


def test_the_sender_keeps_one_connection_across_flushes(receiver: str) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False, compact=False)
    for _ in range(3):
        client.record(_assignment(), ok=True, latency_ms=5)
        client.flush()
    ports = {port for _, port, _ in _Receiver.seen}
    assert (len(_Receiver.seen), len(ports)) == (3, 1)
    client.close()


def test_a_batch_the_compact_format_cannot_hold_goes_as_json(receiver: str) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False)
    huge = {"deployment": NAME, "variant": "canary", "second": 1, "revision": 3,
            "requests": 2**33, "errors": 0, "latency_sum_ms": 0.0, "latency_max_ms": 0.0,
            "histogram": {}}  # fmt: skip
    _, content_type = client._body([huge], "b-1")
    assert content_type == "application/json"
    client.close()


def test_a_flush_after_close_still_sends_and_keeps_no_connection(receiver: str) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False, compact=False)
    client.close()
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    assert (len(_Receiver.seen), client._send_http) == (1, None)


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``status`` and ``body`` (a proxy's page, a rate limit),
    counting them."""

    protocol_version = "HTTP/1.1"
    status: ClassVar[int] = 200
    content_type: ClassVar[str] = "text/html"
    body: ClassVar[bytes] = b"<html><body>maintenance</body></html>"
    asked: ClassVar[list[str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.asked.append(f"{self.command} {self.path}")
        self.send_response(self.status)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[str]:
    _Answering.asked = []
    _Answering.status, _Answering.content_type = 200, "text/html"
    with _serving(_Answering) as url:
        yield url


def test_a_page_that_is_not_canaryguard_s_neither_fails_the_start_nor_stops_the_polling(
    answering: str,
) -> None:
    client = Client(answering, "cgt_x", [NAME], poll_interval=0.1, flush_interval=60)
    try:
        eventually(
            lambda: sum(a.startswith("GET /api/v1/deployments") for a in _Answering.asked) >= 3
        )
        assert all(thread.is_alive() for thread in client._threads)
    finally:
        client.close()


@pytest.mark.parametrize("status", [408, 429])
def test_a_batch_refused_for_now_is_retried(answering: str, status: int) -> None:
    _Answering.status, _Answering.content_type = status, "application/json"
    client = Client(answering, "cgt_x", [NAME], flush_interval=60, start=False, compact=False)
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    assert (client.stats.batches_retried, client.stats.batches_dropped) == (1, 0)
    client.close()


def test_batches_close_cannot_send_are_counted_as_dropped(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    client = Client(url, "cgt_x", [NAME], flush_interval=60, timeout=0.3, start=False)
    try:
        client.record(_assignment(), ok=True, latency_ms=5)
        client.close()
    finally:
        listener.close()
    assert (client.stats.batches_dropped, client.stats.observations_dropped) == (1, 1)


def test_no_pending_batches_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="max_pending_batches"):
        Client("http://127.0.0.1:9", "cgt_x", [NAME], max_pending_batches=0, start=False)


def test_a_cache_file_holding_another_deployment_is_not_served(tmp_path: Path) -> None:
    other = DeploymentState.from_json(
        {
            "name": "someone/else",
            "revision": 3,
            "split": {"canary_basis_points": 0, "criterion": "random", "salt": "s"},
            "stable": {"name": "sec", "version": "1", "content_hash": "h", "document": {}},
            "canary": None,
        }
    )
    (tmp_path / (NAME.replace("/", "__") + ".json")).write_text(json.dumps(other.to_json()))
    client = Client("http://127.0.0.1:9", "cgt_x", [NAME], cache_dir=tmp_path, start=False)
    with pytest.raises(NotReady):
        client.assign(NAME, user_id="u1")
    client.close()


def test_a_client_closed_before_a_fork_stays_closed_in_the_child(receiver: str) -> None:
    client = Client(receiver, "cgt_x", [NAME], flush_interval=60, start=False)
    client.start()
    client.close()

    def child() -> bool:  # no thread of the client comes back, not even when it is used
        client.record(_assignment(), ok=True, latency_ms=1)
        return not any(t.name in NAMES for t in threading.enumerate())

    assert in_a_fork(child) == 0


@pytest.fixture
def https_receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An observations endpoint over HTTPS with a private CA: its URL and the CA file."""
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    _Answering.asked = []
    _Answering.status, _Answering.content_type = 202, "application/json"
    with _serving(_Answering, tls) as url:
        yield url, cert_file


def test_a_client_given_a_tls_context_reaches_a_server_of_a_private_ca(
    https_receiver: tuple[str, Path],
) -> None:
    url, ca_file = https_receiver
    tls = ssl.create_default_context(cafile=str(ca_file))
    client = Client(url, "cgt_x", [NAME], flush_interval=60, start=False, tls=tls)
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    client.close()
    assert (client.stats.batches_sent, _Answering.asked) == (1, ["POST /api/v1/observations"])


def test_the_default_tls_context_refuses_a_server_it_cannot_verify(
    https_receiver: tuple[str, Path],
) -> None:
    url, _ = https_receiver
    client = Client(url, "cgt_x", [NAME], flush_interval=60, start=False, max_retries=0)
    client.record(_assignment(), ok=True, latency_ms=5)
    client.flush()
    client.close()
    assert (client.stats.batches_sent, client.stats.batches_dropped, _Answering.asked) == (0, 1, [])


def test_a_fork_waits_for_a_tls_handshake_in_progress(tmp_path: Path) -> None:
    """A child forked mid-handshake could find the certificate store's lock held by a thread it
    does not have; fork waits until the handshake is over."""
    cert_file, key_file = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    hello_seen, answer = threading.Event(), threading.Event()

    def serve() -> None:  # reads the client's hello, then answers only when told to
        conn, _ = listener.accept()
        conn.recv(1, socket.MSG_PEEK)
        hello_seen.set()
        answer.wait(10)
        with contextlib.suppress(OSError), server_tls.wrap_socket(conn, server_side=True):
            pass

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    tls = ssl.create_default_context(cafile=str(cert_file))
    client = Client(url, "cgt_x", [NAME], start=False, timeout=5, max_retries=0, tls=tls)
    client.record(_assignment(), ok=True, latency_ms=1)
    sender = threading.Thread(target=client.flush)
    sender.start()
    try:
        assert hello_seen.wait(10)
        threading.Timer(0.5, answer.set).start()
        answered_before_fork_returned: list[bool] = []
        assert in_a_fork(lambda: True, after=lambda: answered_before_fork_returned.append(
            answer.is_set()
        )) == 0  # fmt: skip
    finally:
        answer.set()
        sender.join(10)
        listener.close()
        client.close()
    assert answered_before_fork_returned == [True]


def test_two_threads_forking_at_once_leave_the_handshake_gate_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One fork takes the gate; the other, waiting past its limit, goes ahead without it: only
    the one that took it gives it back, and after both the gate is free."""
    monkeypatch.setattr(_HandshakeGate, "FORK_WAIT", 0.1)
    gate = _HandshakeGate()
    first_took, second_done = threading.Event(), threading.Event()

    def first() -> None:
        gate.before_fork()
        first_took.set()
        second_done.wait(10)  # still forking while the second one gives up
        gate.after_fork_in_parent()

    def second() -> None:
        first_took.wait(10)
        gate.before_fork()  # times out: the first one holds the gate
        gate.after_fork_in_parent()
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not gate.lock.locked()
