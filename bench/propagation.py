"""Benchmark: how long a committed rollback takes to reach 100 clients, pushed versus polled.

Run from the repository root::

    .venv/bin/python bench/propagation.py                  # SQLite, 100 clients, 20 rollbacks
    .venv/bin/python bench/propagation.py --backend both --rollbacks 10

A real ``canaryguard serve`` runs on loopback (started as ``bench/api.py`` starts it: SQLite in a
temporary data directory; PostgreSQL with ``--db`` and a fresh schema, dropped at the end),
seeded through the REST API with two versions of the example security policy and one
deployment running a 10 % canary of the second. ``--clients`` clients follow that deployment
from ``--workers`` separate processes (this file in its hidden ``--worker`` mode; 100 processes
would not fit on two cores, so each process runs its share of clients in threads):

- ``push``: ``canaryguard.client.Client`` instances with a reporter token, each following
  the server's ``/api/v1/state`` stream as in production. A subclass notes the wall-clock time at
  which each new revision is installed (the moment ``assign`` starts serving it);
- ``poll``: plain httpx clients, written here, that ``GET /api/v1/deployments/{name}``
  every ``--poll-interval`` seconds (each from a random phase) and note the time a response
  first shows the new revision.

Then, ``--warmup`` + ``--rollbacks`` times: ``POST /api/v1/deployments/{name}/rollbacks``; the
propagation time of each client is from the moment that HTTP response (the commit) reached this
process to the moment that client serves the rollback's revision (``revision_after``). Once all
clients serve it (or ``--timeout`` passed), a new canary starts and again every client must see
it before the next rollback. Times are ``time.time()`` read in different processes on one
machine (one system clock), so they compare directly; a client may see the change a little
before the HTTP response arrives, which gives a negative time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from canaryguard.client import Client
from canaryguard.client._state import DeploymentState

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import (
    CANARY_PERCENT,
    PG_DSN,
    api,
    cpu_seconds,
    example_document,
    postgres_schema,
    running_server,
)
from bench.options import positive, positive_seconds, run_interruptibly
from bench.tables import markdown_table

DEPLOYMENT = "shop/security"
POLICY = "security"
GOAL_P99_MS = 250.0
PUSH = "push"
POLL = "poll"
MODES = (PUSH, POLL)
STOP_TIMEOUT_S = 60.0


# -- the clients (worker processes) ----------------------------------------------------------


class Reporter:
    """JSON lines to the parent on stdout, one writer at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, **fields: Any) -> None:
        line = json.dumps(fields) + "\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()


class TimedClient(Client):
    """The SDK client, reporting the wall-clock time each new revision starts being served."""

    def __init__(self, *args: Any, index: int, reporter: Reporter, **kwargs: Any) -> None:
        self._index = index  # set first: the constructor already applies the current state
        self._reporter = reporter
        super().__init__(*args, **kwargs)

    def _apply(self, state: DeploymentState) -> None:
        before = self.revision(state.name)
        super()._apply(state)
        served_from = time.time()
        after = self.revision(state.name)
        if after != before:
            self._reporter.emit(c=self._index, r=after, t=served_from)


def run_push(config: dict[str, Any], reporter: Reporter, stop: threading.Event) -> dict[str, int]:
    clients = []
    try:
        for index in config["indices"]:
            client = TimedClient(
                config["url"], config["token"], [DEPLOYMENT], index=index, reporter=reporter
            )
            clients.append(client)
            reporter.emit(ready=index, r=client.revision(DEPLOYMENT))
        stop.wait()
    finally:
        closing = [threading.Thread(target=client.close) for client in clients]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join()
    return {
        "state_updates": sum(c.stats.state_updates for c in clients),
        "stream_reconnects": sum(c.stats.stream_reconnects for c in clients),
    }


def poll_one(config: dict[str, Any], index: int, reporter: Reporter, stop: threading.Event) -> int:
    """One polling client; returns its failed polls."""
    interval: float = config["poll_interval"]
    failures = 0
    last: int | None = None
    headers = {"Authorization": f"Bearer {config['token']}"}
    with httpx.Client(base_url=config["url"], headers=headers, timeout=10, trust_env=False) as http:
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                response = http.get(f"/api/v1/deployments/{DEPLOYMENT}")
                response.raise_for_status()
                revision = int(response.json()["revision"])
                seen = time.time()
                if last is None:
                    reporter.emit(ready=index, r=revision)
                    next_at += random.random() * interval  # a random phase per client
                elif revision != last:
                    reporter.emit(c=index, r=revision, t=seen)
                last = revision
            except httpx.HTTPError:
                failures += 1
            next_at += interval
            now = time.monotonic()
            next_at = max(next_at, now)  # fell behind: poll now, not in a burst of catch-ups
            stop.wait(next_at - now)
    return failures


def run_poll(config: dict[str, Any], reporter: Reporter, stop: threading.Event) -> dict[str, int]:
    failures: list[int] = []

    def one(index: int) -> None:
        failures.append(poll_one(config, index, reporter, stop))

    threads = [threading.Thread(target=one, args=(i,)) for i in config["indices"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"failed_polls": sum(failures)}


def worker() -> int:
    """The hidden ``--worker`` mode: one JSON config line on stdin, JSON lines on stdout; stops
    when stdin is closed."""
    config = json.loads(sys.stdin.readline())
    reporter = Reporter()
    stop = threading.Event()
    stats: dict[str, int] = {}
    target = run_push if config["mode"] == PUSH else run_poll

    def run() -> None:
        stats.update(target(config, reporter, stop))

    thread = threading.Thread(target=run, name="clients")
    thread.start()
    sys.stdin.read()  # until the parent closes it
    stop.set()
    thread.join()
    reporter.emit(done=True, stats=stats)
    return 0


# -- the fleet, seen from the parent -------------------------------------------------------


@dataclass
class Fleet:
    """The worker processes of one mode and what their clients reported."""

    mode: str
    clients: int
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    ready: dict[int, int] = field(default_factory=dict)  # client -> revision when ready
    current: dict[int, int] = field(default_factory=dict)  # client -> revision it serves
    seen: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # (revision, time)
    stats: dict[str, int] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            with self.changed:
                if "ready" in message:
                    client = int(message["ready"])
                    self.ready[client] = self.current[client] = int(message["r"])
                elif "done" in message:
                    for key, value in message["stats"].items():
                        self.stats[key] = self.stats.get(key, 0) + int(value)
                else:
                    client, revision = int(message["c"]), int(message["r"])
                    self.current[client] = max(self.current.get(client, 0), revision)
                    self.seen.setdefault(client, []).append((revision, float(message["t"])))
                self.changed.notify_all()

    def wait(self, revision: int, timeout: float) -> bool:
        """Until every client serves ``revision`` (or a later one), or ``timeout`` passed."""
        with self.changed:
            return self.changed.wait_for(
                lambda: (
                    len(self.current) == self.clients
                    and all(r >= revision for r in self.current.values())
                ),
                timeout,
            )

    def wait_ready(self, timeout: float) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.ready) == self.clients, timeout):
                raise TimeoutError(
                    f"{self.mode}: only {len(self.ready)} of {self.clients} clients got ready"
                )

    def served_at(self, revision: int) -> list[float | None]:
        """Per client, when it first served ``revision`` or a later one (None: not yet)."""
        with self.changed:
            return [
                min((t for r, t in self.seen.get(client, []) if r >= revision), default=None)
                for client in range(self.clients)
            ]


@contextlib.contextmanager
def workers(
    running: Fleet, script: Path, configs: Sequence[dict[str, Any]], log_dir: Path, prefix: str
) -> Iterator[None]:
    """One ``script --worker`` process per config (sent on stdin: tokens stay off the command
    line), read into ``running``; on the way out their stdin closes and they are waited for."""
    try:
        for number, config in enumerate(configs):
            log = (log_dir / f"{prefix}-{number}.log").open("wb")
            running.logs.append(log)
            process = subprocess.Popen(  # noqa: S603 - this interpreter running a bench file
                [sys.executable, str(script), "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            running.processes.append(process)
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(json.dumps(config) + "\n")
            process.stdin.flush()
            reader = threading.Thread(target=running.read, args=(process.stdout,), daemon=True)
            reader.start()
            running.readers.append(reader)
        yield
    finally:
        for process in running.processes:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        for process in running.processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in running.readers:
            reader.join(5)
        for handle in running.logs:
            handle.close()


def shares(args: argparse.Namespace) -> list[list[int]]:
    """The client indices of each of ``--workers`` processes (none empty)."""
    split = [list(range(args.clients))[w :: args.workers] for w in range(args.workers)]
    return [share for share in split if share]


@contextlib.contextmanager
def fleet(
    mode: str, urls: Sequence[str], token: str, args: argparse.Namespace, log_dir: Path
) -> Iterator[Fleet]:
    """``--workers`` processes running ``--clients`` clients between them, stopped after;
    worker ``w`` talks to ``urls[w % len(urls)]``."""
    running = Fleet(mode, args.clients)
    configs = [
        {"mode": mode, "url": urls[number % len(urls)], "token": token, "indices": indices,
         "poll_interval": args.poll_interval}
        for number, indices in enumerate(shares(args))
    ]  # fmt: skip
    with workers(running, Path(__file__).resolve(), configs, log_dir, mode):
        yield running


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one mode measured on one backend."""

    backend: str
    mode: str
    latencies_ms: list[float] = field(default_factory=list)  # every client, every rollback
    last_ms: list[float] = field(default_factory=list)  # the last client of each rollback
    missed: int = 0  # client x rollback pairs not served within --timeout
    rollback_ms: list[float] = field(default_factory=list)  # the rollback requests themselves
    server_cores: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)


def measure(
    running: Fleet,
    admin: httpx.Client,
    args: argparse.Namespace,
    outcome: Outcome,
    *,
    pid: int,
    rng: random.Random,
) -> None:
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    for round_ in range(args.warmup + args.rollbacks):
        time.sleep(rng.uniform(0.1, 0.5))  # apart from the last change, by a random amount
        sent = time.time()
        record = api(
            admin,
            "POST",
            f"/api/v1/deployments/{DEPLOYMENT}/rollbacks",
            expect=201,
            json={"reason": "benchmark: propagation of a rollback"},
        )
        committed = time.time()
        revision = int(record["revision_after"])
        running.wait(revision, args.timeout)
        served = running.served_at(revision)
        if round_ >= args.warmup:
            outcome.rollback_ms.append((committed - sent) * 1e3)
            times = [(t - committed) * 1e3 for t in served if t is not None]
            outcome.latencies_ms.extend(times)
            outcome.missed += sum(t is None for t in served)
            if times and len(times) == len(served):
                outcome.last_ms.append(max(times))
        canary = api(
            admin,
            "POST",
            f"/api/v1/deployments/{DEPLOYMENT}/canary",
            expect=200,
            json={"policy": f"{POLICY}@2", "percent": CANARY_PERCENT},
        )
        if not running.wait(int(canary["revision"]), args.timeout):
            print(f"  {running.mode}: not every client saw the new canary in time", flush=True)
        if (round_ + 1) % 5 == 0 or round_ + 1 == args.warmup + args.rollbacks:
            print(f"  {running.mode}: rollback {round_ + 1}/{args.warmup + args.rollbacks}")
    outcome.server_cores = (cpu_seconds(pid) - cpu) / (time.perf_counter() - started)


def seed(admin: httpx.Client) -> str:
    """Two policy versions, the deployment with a 10 % canary; returns a reporter token."""
    for filename in ("security-v1.yaml", "security-v2.toml"):
        api(
            admin,
            "POST",
            f"/api/v1/policies/{POLICY}/versions",
            expect=201,
            json={"document": example_document(filename)},
        )
    api(
        admin,
        "POST",
        "/api/v1/deployments",
        expect=201,
        json={"name": DEPLOYMENT, "stable": f"{POLICY}@1"},
    )
    api(
        admin,
        "POST",
        f"/api/v1/deployments/{DEPLOYMENT}/canary",
        expect=200,
        json={"policy": f"{POLICY}@2", "percent": CANARY_PERCENT},
    )
    token: str = api(
        admin,
        "POST",
        "/api/v1/tokens",
        expect=201,
        json={"name": "bench-clients", "role": "reporter"},
    )["token"]
    return token


@dataclass
class Served:
    url: str
    admin: httpx.Client
    token: str  # a reporter's
    pid: int
    data_dir: Path
    db_url: str | None


def seeded_server(
    stack: contextlib.ExitStack,
    label: str,
    args: argparse.Namespace,
    lifecycle: list[str],
    tag: str,
) -> Served:
    """A ``canaryguard serve`` on ``label``'s backend (a fresh PostgreSQL schema, or SQLite in a
    temporary directory), seeded. Everything is undone when ``stack`` closes."""
    db_url = stack.enter_context(postgres_schema(args.pg_dsn)) if label != "sqlite" else None
    data_dir = Path(
        stack.enter_context(tempfile.TemporaryDirectory(prefix=f"canaryguard-{tag}-{label}-"))
    )
    url, admin_token, pid = stack.enter_context(running_server(label, data_dir, db_url, lifecycle))
    admin = stack.enter_context(
        httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=30,
            trust_env=False,
        )
    )
    token = seed(admin)
    print(f"{label}: serving on {url} (pid {pid}), seeded", flush=True)
    return Served(url, admin, token, pid, data_dir, db_url)


def run_backend(label: str, args: argparse.Namespace, lifecycle: list[str]) -> list[Outcome]:
    outcomes = []
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        served = seeded_server(stack, label, args, lifecycle, "prop")
        url, admin, token, pid, data_dir = (
            served.url, served.admin, served.token, served.pid, served.data_dir,
        )  # fmt: skip
        # more replicas on the same database: the clients spread over all of them, the
        # rollbacks go to the first, so the others' clients learn of them by the relay
        urls = [url] + [
            stack.enter_context(
                running_server(
                    label, data_dir, served.db_url, lifecycle, log_name=f"replica-{number}"
                )
            )[0]
            for number in range(2, args.replicas + 1)
        ]
        for mode in args.modes:
            outcome = Outcome(label, mode)
            print(
                f"{label} {mode}: starting {args.clients} clients in {args.workers} processes",
                flush=True,
            )
            with fleet(mode, urls, token, args, data_dir) as running:
                running.wait_ready(120)
                measure(running, admin, args, outcome, pid=pid, rng=rng)
            outcome.stats = dict(running.stats)
            outcomes.append(outcome)
    return outcomes


# -- reporting -----------------------------------------------------------------------------


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def mode_label(mode: str, args: argparse.Namespace) -> str:
    label = "push (SDK, state stream)" if mode == PUSH else f"poll every {args.poll_interval:g} s"
    if args.replicas > 1:
        label += f", clients on {args.replicas} replicas"
    return label


def table(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    header = [
        "backend",
        "clients",
        "mode",
        "rollbacks",
        "median ms",
        "p99 ms",
        "max ms",
        "last client: median ms",
        "missed",
        "server cores busy",
        "goal (p99)",
    ]
    rows = [header]
    for outcome in outcomes:
        values = outcome.latencies_ms
        if not values:
            continue
        high = p99(values)
        verdict = "ok" if high < GOAL_P99_MS and not outcome.missed else "over"
        rows.append(
            [
                outcome.backend,
                str(args.clients),
                mode_label(outcome.mode, args),
                str(args.rollbacks),
                f"{statistics.median(values):.1f}",
                f"{high:.1f}",
                f"{max(values):.1f}",
                f"{statistics.median(outcome.last_ms):.1f}" if outcome.last_ms else "-",
                str(outcome.missed),
                f"{outcome.server_cores:.2f}",
                f"< {GOAL_P99_MS:g} ms ({verdict} {high / GOAL_P99_MS:.2f})",
            ]
        )
    return markdown_table(rows, numeric={1, 3, 4, 5, 6, 7, 8, 9})


def run(args: argparse.Namespace) -> int:
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    outcomes: list[Outcome] = []
    lifecycle: list[str] = []
    for label in labels:
        outcomes.extend(run_backend(label, args, lifecycle))
    print()
    print(
        f"Server: `canaryguard serve` on loopback, one deployment with a {CANARY_PERCENT} % "
        f"canary; {args.clients} clients in {args.workers} processes on {os.cpu_count()} shared "
        f"cores; {args.rollbacks} rollbacks after {args.warmup} warm-up, each {args.clients} "
        "propagation times (from the rollback's HTTP response to the client serving its "
        "revision; time.time() across processes on one machine)."
    )
    print()
    print(table(outcomes, args))
    print()
    for outcome in outcomes:
        values = outcome.latencies_ms
        if not values:
            print(f"{outcome.backend} {outcome.mode}: no client saw any rollback")
            continue
        print(
            f"{outcome.backend} {mode_label(outcome.mode, args)}: fastest {min(values):.1f} ms; "
            f"the rollback request itself took {statistics.median(outcome.rollback_ms):.1f} ms "
            f"(median); client stats {outcome.stats}"
        )
        lasts = ", ".join(f"{value:.0f}" for value in sorted(outcome.last_ms))
        print(f"  the last client of each rollback, ms, sorted: {lasts}")
    for note in lifecycle:
        print(note)
    return 0 if all(o.latencies_ms and not o.missed for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--worker"]:
        return worker()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--clients", type=positive, default=100)
    parser.add_argument(
        "--replicas",
        type=positive,
        default=1,
        help="serve processes on one database; clients spread over them, rollbacks to the first",
    )
    parser.add_argument("--workers", type=positive, default=4, help="client processes")
    parser.add_argument("--rollbacks", type=positive, default=20, help="measured, per mode")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rollbacks first")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--poll-interval", type=positive_seconds, default=1.0)
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="per change, for all clients"
    )
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the pauses")
    args = parser.parse_args(argv)
    return run_interruptibly(run, args)


if __name__ == "__main__":
    sys.exit(main())
