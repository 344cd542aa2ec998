"""The client SDK: local assignment, outcome reporting, and state followed by push.

Threads: a *follower* keeps each deployment's state current (the server's compact state
stream, which opens with the current states so a reconnect misses nothing; polling while the
stream is down) and a *sender* flushes outcomes every ``flush_interval`` seconds as one gzip
batch (the compact binary batch of ``domain.observation_batch``; JSON for a server that answers
415). ``assign`` and ``record`` never touch the network. With ``cache_dir``, the last known good
state is kept on disk, so an instance that restarts while the server is down still serves
(fail-static).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import secrets
import ssl
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from canaryguard.client._buffer import OutcomeBuffer
from canaryguard.client._state import Assignment, DeploymentState, PolicyVersion
from canaryguard.domain import observation_batch
from canaryguard.domain.assignment import Variant, choose_variant

__all__ = ["Client", "ClientStats", "NotReady"]

log = logging.getLogger("canaryguard.client")
MAX_BATCH = 5_000
COMPACT = observation_batch.CONTENT_TYPE
UNSUPPORTED_MEDIA_TYPE = 415
# refusals that say "later", not "never" (a proxy's rate limit, a request timeout): retried
_TRY_AGAIN = frozenset({408, 429})


class NotReady(RuntimeError):
    """No state for this deployment yet: the server was never reached and no cache exists."""


@dataclass
class ClientStats:
    """What the client could not do, counted."""

    batches_sent: int = 0
    batches_retried: int = 0
    batches_dropped: int = 0
    observations_dropped: int = 0
    outcomes_dropped: int = 0  # the buffer was full
    state_updates: int = 0
    stream_reconnects: int = 0


class Client:
    """canaryguard for an application process (thread-safe; safe across ``fork``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        deployments: Iterable[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        flush_interval: float = 1.0,
        poll_interval: float = 5.0,
        timeout: float = 5.0,
        max_retries: int = 5,
        max_pending_batches: int = 100,
        compact: bool = True,
        start: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if max_pending_batches < 1:
            raise ValueError(f"max_pending_batches must be at least 1, got {max_pending_batches}")
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._names = tuple(dict.fromkeys(deployments))
        self._cache = Path(cache_dir) if cache_dir is not None else None
        self._flush_interval = flush_interval
        self._poll_interval = poll_interval
        self._timeout = timeout
        self._max_retries = max_retries
        self._pending: deque[tuple[list[dict[str, Any]], str, int]] = deque(
            maxlen=max_pending_batches
        )
        self._states: dict[str, DeploymentState] = {}
        self._retired: dict[str, set[str]] = {}  # salts of incarnations replaced, per deployment
        self._documents: dict[tuple[str, str], PolicyVersion] = {}
        self._buffer = OutcomeBuffer()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._send_http: httpx.Client | None = None
        # One TLS context for every HTTP client this client opens, made here, before any fork:
        # loading the CA bundle for each poll and each send costs milliseconds of OpenSSL, and a
        # process forked while another thread is inside OpenSSL deadlocks in the child the first
        # time it makes a context of its own (about 1 fork in 100 when another thread makes
        # contexts in a loop; the child that reuses this one never does). Its handshakes pass
        # the process's handshake gate, which fork waits for (``_HandshakeGate``).
        self._tls = _gated(tls if tls is not None else httpx.create_ssl_context())
        self._closed = False
        self._compact = compact
        self._stop = threading.Event()
        self._live_stream: httpx.Response | None = None
        self._threads: list[threading.Thread] = []
        self.stats = ClientStats()
        _forget_in_children(self)
        self._load_cache()
        if start:
            self.start()

    # -- the hot path ------------------------------------------------------------------------
    def assign(
        self,
        deployment: str,
        *,
        user_id: str | None = None,
        ip: str | None = None,
        attributes: Mapping[str, str] | None = None,
        groups: Collection[str] = (),
    ) -> Assignment:
        """The variant, policy and revision for one request, computed locally."""
        state = self._states.get(deployment)
        if state is None:
            raise NotReady(
                f"no state for deployment {deployment!r} yet (server unreachable, no cache)"
            )
        variant = choose_variant(
            state.split, user_id=user_id, ip=ip, attributes=attributes, groups=groups
        )
        policy = (
            state.canary if variant is Variant.CANARY and state.canary is not None else state.stable
        )
        if policy is state.stable:
            variant = Variant.STABLE
        return Assignment(
            deployment=deployment, revision=state.revision, variant=variant, policy=policy
        )

    def record(self, assignment: Assignment, *, ok: bool, latency_ms: float) -> None:
        """Count one outcome (aggregated locally, sent within ``flush_interval``)."""
        self._buffer.add(
            assignment.deployment,
            assignment.revision,
            assignment.variant,
            ok=ok,
            latency_ms=latency_ms,
        )

    @contextlib.contextmanager
    def track(self, assignment: Assignment) -> Iterator[None]:
        """Time the block; an exception counts as an error (and is re-raised)."""
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.record(assignment, ok=ok, latency_ms=(time.perf_counter() - started) * 1000)

    def revision(self, deployment: str) -> int | None:
        state = self._states.get(deployment)
        return state.revision if state is not None else None

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._refresh_all()
        self._start_threads()

    def _start_threads(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._follow, name="canaryguard-follow", daemon=True),
            threading.Thread(target=self._send_loop, name="canaryguard-send", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def flush(self) -> None:
        """Send everything recorded so far (including the current second)."""
        self._send(self._buffer.drain(everything=True))

    def close(self) -> None:
        """Stop the threads and flush: call at shutdown (or use the client as a context manager).

        Bounded: the last flush tries each waiting batch once, for at most ``timeout`` seconds
        in all (a server that hangs must not hold the application's shutdown), and what it
        could not send is counted as dropped."""
        self._stop.set()
        stream = self._live_stream
        if stream is not None:
            with contextlib.suppress(Exception):  # closing from another thread ends its read
                stream.close()
        for thread in self._threads:
            thread.join(self._timeout + 1)
        deadline = time.monotonic() + self._timeout
        if self._send_lock.acquire(timeout=self._timeout + 1):
            try:
                self._send_locked(self._buffer.drain(everything=True), deadline=deadline)
                self._closed = True
                if self._send_http is not None:
                    self._send_http.close()
                    self._send_http = None
                left = list(self._pending)
                self._pending.clear()
            finally:
                self._send_lock.release()
        else:  # the sender is stuck in a send: what it holds stays with it
            self._closed = True
            left = []
        for batch, _, _ in left:
            self.stats.batches_dropped += 1
            self.stats.observations_dropped += len(batch)
        self.stats.outcomes_dropped = self._buffer.dropped

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- state -------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self._base, headers=self._headers, timeout=self._timeout, verify=self._tls
        )

    def _refresh_all(self) -> None:
        try:
            with self._http() as http:
                for name in self._names:
                    try:
                        self._refresh(http, name)
                    except httpx.HTTPStatusError as exc:  # one unknown name must not block the rest
                        log.warning("cannot read deployment %s: %s", name, exc)
                    except (ValueError, KeyError, TypeError, AttributeError) as exc:
                        # a 200 that is no deployment (a proxy's page, a maintenance answer):
                        # served as if unreachable, and read again at the next poll
                        log.warning(
                            "cannot read deployment %s: the answer is not canaryguard's (%s: %s)",
                            name,
                            type(exc).__name__,
                            exc,
                        )
        except httpx.HTTPError as exc:
            log.warning("canaryguard unreachable (%s); serving the last known good state", exc)

    def _refresh(self, http: httpx.Client, name: str) -> None:
        response = http.get(f"/api/v1/deployments/{name}")
        response.raise_for_status()
        self._apply_body(http, name, response.json())

    def _apply_body(self, http: httpx.Client, name: str, body: dict[str, Any]) -> None:
        stable = self._policy(http, body["stable"])
        canary = self._policy(http, body["canary"]) if body.get("canary") else None
        state = DeploymentState.from_json(
            {
                "name": name,
                "revision": body["revision"],
                "split": body["split"],
                "stable": _policy_json(stable),
                "canary": _policy_json(canary) if canary else None,
            }
        )
        self._apply(state)

    def _policy(self, http: httpx.Client, ref: dict[str, str]) -> PolicyVersion:
        key = (ref["name"], ref["version"])
        cached = self._documents.get(key)
        if cached is not None:
            return cached
        response = http.get(f"/api/v1/policies/{ref['name']}/versions/{ref['version']}")
        response.raise_for_status()
        body = response.json()
        policy = PolicyVersion(
            body["name"], body["version"], body["content_hash"], body["document"]
        )
        self._documents[key] = policy
        return policy

    def _is_news(self, name: str, revision: int, salt: str) -> bool:
        """Newer than what is held: a higher revision, or another incarnation of the deployment.

        A deployment's salt is drawn when it is created and never changes, so a state with
        another salt comes from another database (a cache written against the old server, a
        server set up again): its revisions count from 1 again and are not comparable. An
        incarnation once replaced is never taken back: an old server still reachable (a DNS
        entry not yet expired, a replica left on its own database) must not take turns with the
        new one."""
        if salt in self._retired.get(name, ()):
            return False
        current = self._states.get(name)
        return current is None or revision > current.revision or salt != current.split.salt

    def _apply(self, state: DeploymentState) -> None:
        with self._lock:
            if not self._is_news(state.name, state.revision, state.split.salt):
                return  # never go back to an older revision, nor to a replaced incarnation
            current = self._states.get(state.name)
            if current is not None and current.split.salt != state.split.salt:
                self._retired.setdefault(state.name, set()).add(current.split.salt)
            self._states[state.name] = state
            self.stats.state_updates += 1
        self._save_cache(state)

    def _follow(self) -> None:
        pause = 0.5
        while not self._stop.is_set():
            try:
                self._stream()
                pause = 0.5
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("event stream interrupted: %s", exc)
            except Exception:  # this thread outlives any answer: without it, no state follows
                log.exception("following the state stream failed; polling meanwhile")
            if self._stop.is_set():
                return
            self.stats.stream_reconnects += 1
            try:
                self._refresh_all()  # polling while the stream is down
            except Exception:
                log.exception("polling the state failed; trying again")
            self._stop.wait(min(pause, self._poll_interval))
            pause = min(pause * 2, self._poll_interval)

    def _stream(self) -> None:
        """Follow ``/api/v1/state``: the current states on connect, then every newer one."""
        timeout = httpx.Timeout(self._timeout, read=max(self._timeout, 30.0))
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("deployment", name) for name in self._names
        ]
        with (
            httpx.Client(
                base_url=self._base, headers=self._headers, timeout=timeout, verify=self._tls
            ) as http,
            http.stream("GET", "/api/v1/state", params=params) as response,
        ):
            self._live_stream = response  # close() closes it to wake this thread at once
            response.raise_for_status()
            data: list[str] = []
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self._on_state(http, json.loads("".join(data)))
                    data = []

    def _on_state(self, http: httpx.Client, body: dict[str, Any]) -> None:
        if self._is_news(body["name"], body["revision"], body["split"]["salt"]):
            self._apply_body(http, body["name"], body)

    # -- outcomes ----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            self._send(self._buffer.drain())

    def _send(self, observations: list[dict[str, Any]]) -> None:
        with self._send_lock:  # flush() and the sender thread share the retry queue
            self._send_locked(observations)
            self.stats.outcomes_dropped = self._buffer.dropped

    def _queue(self, batch: list[dict[str, Any]], batch_id: str, attempts: int) -> None:
        if len(self._pending) == self._pending.maxlen:  # the oldest waiting batch gives way
            oldest, _, _ = self._pending.popleft()
            self.stats.batches_dropped += 1
            self.stats.observations_dropped += len(oldest)
        self._pending.append((batch, batch_id, attempts))

    @contextlib.contextmanager
    def _sending(self) -> Iterator[httpx.Client]:
        """The sender's HTTP client, kept open (a new one per flush would load the CA bundle
        and open a connection every second); after ``close``, one for this send only. Used
        under ``_send_lock`` only."""
        if self._closed:
            with self._http() as http:
                yield http
            return
        if self._send_http is None:
            self._send_http = self._http()
        yield self._send_http

    def _body(self, batch: list[dict[str, Any]], batch_id: str) -> tuple[bytes, str]:
        """A batch's gzip body and its content type: the compact batch (a fraction of the
        server's CPU per observation), or JSON for a server that does not take it."""
        if self._compact:
            try:
                return observation_batch.encode(batch, batch_id=batch_id), COMPACT
            except ValueError as exc:  # a value the compact batch cannot hold: JSON can
                log.warning("sending a batch as JSON: %s", exc)
        body = json.dumps({"batch_id": batch_id, "observations": batch}).encode()
        return body, "application/json"

    def _send_locked(
        self, observations: list[dict[str, Any]], *, deadline: float | None = None
    ) -> None:
        for start in range(0, len(observations), MAX_BATCH):
            self._queue(observations[start : start + MAX_BATCH], secrets.token_hex(12), 0)
        if not self._pending:
            return
        with self._sending() as http:
            self._send_pending(http, deadline=deadline)

    def _send_pending(self, http: httpx.Client, *, deadline: float | None = None) -> None:
        for _ in range(len(self._pending)):
            if deadline is not None and time.monotonic() >= deadline:
                return  # closing: the rest is counted as dropped
            if deadline is None and self._stop.is_set() and not self._closed:
                return  # closing: the last flush takes it from here, within its bound
            batch, batch_id, attempts = self._pending.popleft()
            raw, content_type = self._body(batch, batch_id)
            body = gzip.compress(raw, compresslevel=1)  # ~40x cheaper than 9, ~35 % more bytes
            try:
                response = http.post(
                    "/api/v1/observations",
                    content=body,
                    headers={"content-type": content_type, "content-encoding": "gzip"},
                )
                if response.status_code == UNSUPPORTED_MEDIA_TYPE and self._compact:
                    log.info("the server takes no compact batches: sending JSON from now on")
                    self._compact = False
                    self._pending.appendleft((batch, batch_id, attempts))  # again, as JSON
                    continue
                if response.status_code >= 500 or response.status_code in _TRY_AGAIN:
                    raise httpx.HTTPStatusError(
                        "server error", request=response.request, response=response
                    )
            except httpx.HTTPError:
                if attempts + 1 > self._max_retries:
                    self.stats.batches_dropped += 1
                    self.stats.observations_dropped += len(batch)
                else:
                    self.stats.batches_retried += 1
                    self._queue(batch, batch_id, attempts + 1)  # same id: counted once
                continue
            if response.is_success:
                self.stats.batches_sent += 1
            else:  # the server refused it (4xx): resending cannot help
                self.stats.batches_dropped += 1
                self.stats.observations_dropped += len(batch)
                log.warning("canaryguard refused a batch: %s", response.text[:200])

    # -- fail-static cache -------------------------------------------------------------------
    def _cache_file(self, name: str) -> Path | None:
        if self._cache is None:
            return None
        return self._cache / (name.replace("/", "__") + ".json")

    def _save_cache(self, state: DeploymentState) -> None:
        path = self._cache_file(state.name)
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # a new file of our own (never one planted there, nor a link followed), mode 0600:
            # the policies are inside
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(state.to_json()))
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # serving matters more than the cache
            log.warning("cannot write the state cache %s: %s", path, exc)

    def _load_cache(self) -> None:
        for name in self._names:
            path = self._cache_file(name)
            if path is None or not path.exists():
                continue
            try:
                cached = DeploymentState.from_json(json.loads(path.read_text()))
                if cached.name != name:
                    raise ValueError(f"it holds deployment {cached.name!r}, not {name!r}")
                self._apply(cached)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring the unreadable state cache %s: %s", path, exc)

    def _after_fork_in_child(self) -> None:
        """A forked worker starts with the parent's state but none of its threads or outcomes.

        Everything the parent's threads may have held is replaced (the locks, the stop event,
        the connections); the TLS context is kept (see ``_HandshakeGate``). The child's threads
        start here, so it follows the state from the moment it exists."""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._send_http = None  # the parent's connections are the parent's
        self._live_stream = None
        self._buffer.reset()
        self._pending.clear()
        self.stats = ClientStats()
        if self._closed:
            return  # closed in the parent: closed here too
        if self._threads:  # the parent's threads do not exist here: start this process's own
            self._start_threads()


def _policy_json(policy: PolicyVersion) -> dict[str, Any]:
    return {
        "name": policy.name,
        "version": policy.version,
        "content_hash": policy.content_hash,
        "document": policy.document,
    }


class _HandshakeGate:
    """TLS handshakes of every client in the process, one at a time, and none across a fork.

    A handshake verifies the server's certificate under a lock of the context's certificate
    store. A child forked while a parent thread held it finds it held by a thread that does not
    exist in the child, and the child's first handshake on the shared context hangs for good.
    So ``fork`` waits (up to ``FORK_WAIT`` seconds) for a handshake in progress, and the child
    gets a fresh gate. Handshakes are milliseconds of work; waiting on a slow server's answer
    inside one holds the others for at most the client's ``timeout``."""

    FORK_WAIT = 2.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # per forking thread: two threads may fork at once, and only the one that took the
        # lock may give it back
        self._forking = threading.local()

    def before_fork(self) -> None:
        self._forking.held = self.lock.acquire(timeout=self.FORK_WAIT)
        if not self._forking.held:
            log.warning("forking during a TLS handshake that outlasted %s s", self.FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        if getattr(self._forking, "held", False):
            self._forking.held = False
            self.lock.release()

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self._forking = threading.local()


_GATE = _HandshakeGate()


class _GatedSocket(ssl.SSLSocket):
    """The sockets of the clients' TLS contexts: each handshake passes ``_GATE``."""

    def do_handshake(self, block: bool = False) -> None:
        with _GATE.lock:
            super().do_handshake(block)


def _gated(tls: ssl.SSLContext) -> ssl.SSLContext:
    # an instance may choose its sockets' class (documented for ssl.SSLContext.sslsocket_class)
    tls.sslsocket_class = _GatedSocket
    return tls


_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _forget_in_children(client: Client) -> None:
    _clients.add(client)


def _after_fork() -> None:
    _GATE.after_fork_in_child()
    for client in list(_clients):
        client._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_GATE.before_fork,
        after_in_parent=_GATE.after_fork_in_parent,
        after_in_child=_after_fork,
    )
