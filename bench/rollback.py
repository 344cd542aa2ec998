"""Benchmark: a rollback end to end, from the decision to the last of 100 clients, and what a
staged rollback adds to its configured waits.

Run from the repository root::

    .venv/bin/python bench/rollback.py                  # SQLite, 100 clients (about 3 minutes)
    .venv/bin/python bench/rollback.py --backend both   # and PostgreSQL (about 6 minutes)

A real ``canaryguard serve`` runs on loopback (started as ``bench/api.py`` starts it: SQLite in a
temporary data directory; PostgreSQL with ``--db`` and a fresh schema, dropped at the end),
seeded as ``bench/propagation.py`` seeds it: two versions of the example security policy and one
deployment running a 10 % canary of the second. ``--clients`` SDK clients
(``canaryguard.client.Client`` with a reporter token, following ``/api/v1/state``; the subclass of
``bench/propagation.py`` notes the wall-clock time each new revision starts being served) run in
``--workers`` processes (this file in its hidden ``--worker`` mode), each process with its
clients in threads and one traffic thread that every 10 ms has each of its clients ``assign`` and
``record`` requests (``--rate`` per client per second, 2 ms each, no errors: neither the
detector nor a threshold can fire on it), so the server ingests every client's one-second
flushes throughout, as in production. One change to the SDK's behaviour: the short-lived
``httpx.Client`` it makes for every flush shares one TLS context per process (made anew, it loads
the CA bundle, ~37 ms of CPU on this machine; 100 clients flushing every second would need more
CPU than two cores have, and the server would be starved). Three measurements follow, each
after ``--warmup`` unrecorded rounds:

- ``manual`` (``--manual`` rounds): after a random pause of 0.1 to 0.5 s, ``POST
  /api/v1/deployments/{name}/rollbacks`` (immediate). The time is from just before the request
  is sent (the decision) to the moment the last client serves the rollback's ``revision_after``.
  A new 10 % canary is then started and seen by every client before the next round.
- ``automatic`` (``--automatic`` rounds): a new 10 % canary; after 2 to 4 s of good traffic
  the workers are told to make every request assigned to the canary fail (stable stays
  error-free). The server's monitor (a tick a second, judging each second two seconds after it
  ends, when the clients' flushes are in) rolls back on its own. Timed from the moment the first
  worker's traffic thread started recording the bad outcomes (``time.time()``, noted by the
  worker) to the moment the last client serves the automatic rollback's ``revision_after``; and
  from the time of its ``AutoRollbackTriggered`` event (the server's clock: the start of the
  rollback's transaction, ``GET /api/v1/events/log``) to the same moment.
- ``staged`` (``--staged`` rounds): the deployment's ``staged_rollback`` is set to
  ``stage_interval_seconds`` = ``--interval`` and ``evaluate_between_stages: false``; each round
  starts a canary at ``--staged-percent`` (60: the default stages 50, 25, 10 and 0 % all apply)
  and ``POST .../rollbacks`` with ``staged: true``, then reads ``GET /api/v1/rollbacks/{id}``
  until it has finished. From the record: the first stage's ``applied_at`` minus the record's
  ``started_at``; each later stage's gap to the one before minus the interval (the overhead
  beyond the configured wait); the whole rollback minus its waits; and, from the clients, each
  stage's ``applied_at`` to the last client serving that stage's revision.

Times are ``time.time()`` read in different processes of one machine (one system clock), so they
compare directly. With 20 samples the p99 (``statistics.quantiles``, inclusive) lies between
the two largest values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import httpx

from canaryguard.domain.assignment import Variant

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import (
    CANARY_PERCENT,
    PG_DSN,
    api,
    cpu_mark,
    cpu_since,
)
from bench.options import positive, positive_seconds, run_interruptibly
from bench.propagation import (
    DEPLOYMENT,
    POLICY,
    Fleet,
    Reporter,
    TimedClient,
    p99,
    seeded_server,
    shares,
    workers,
)
from bench.tables import markdown_table

GOAL_MS = 1_000.0  # from the decision to the last client; the original system's was 2 minutes
TICK_S = 0.01  # the traffic threads' period
LATENCY_MS = 2.0  # every reported request's latency: one histogram bucket, nothing to detect
OFF, GOOD, BAD = "off", "good", "bad"
STOP_TIMEOUT_S = 60.0
ROLLBACKS = f"/api/v1/deployments/{DEPLOYMENT}/rollbacks"
AUTO_TRIGGERED = "io.canaryguard.rollback.auto_triggered"


# -- the clients (worker processes) ----------------------------------------------------------

SHARED_TLS = ssl.create_default_context()  # loaded once per process, not once per flush


class ReportingClient(TimedClient):
    """``TimedClient`` whose short-lived HTTP clients (one per flush and per poll) share one TLS
    context: ``httpx.Client()`` loads the CA bundle each time (~37 ms of CPU here), which for
    100 clients flushing every second would take more CPU than the machine has."""

    def _http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self._base, headers=self._headers, timeout=self._timeout, verify=SHARED_TLS
        )


class Traffic:
    """The mode the parent set (``off``, ``good`` or ``bad``), read by the traffic thread."""

    def __init__(self) -> None:
        self.mode = OFF


def generate(
    clients: Sequence[TimedClient],
    traffic: Traffic,
    reporter: Reporter,
    stop: threading.Event,
    *,
    worker_number: int,
    rate: float,
) -> None:
    """Every ``TICK_S``: each client assigns and records its share of requests. ``bad``: every
    request the canary serves fails. Reports the time of the first tick of each new mode."""
    rng = random.Random()
    owed = 0.0  # requests due but not yet made (rates below one per tick)
    mode = OFF
    next_at = time.monotonic()
    while not stop.is_set():
        if traffic.mode != mode:
            mode = traffic.mode
            reporter.emit(w=worker_number, mode=mode, t=time.time())
        owed += rate * TICK_S
        per_tick = int(owed)
        owed -= per_tick
        if mode != OFF:
            for client in clients:
                for _ in range(per_tick):
                    assignment = client.assign(DEPLOYMENT, user_id=str(rng.getrandbits(32)))
                    failed = mode == BAD and assignment.variant is Variant.CANARY
                    client.record(assignment, ok=not failed, latency_ms=LATENCY_MS)
        next_at += TICK_S
        now = time.monotonic()
        next_at = max(next_at, now)  # fell behind: carry on from now, no burst of catch-ups
        stop.wait(next_at - now)


def worker() -> int:
    """The hidden ``--worker`` mode: one JSON config line on stdin, then one line per traffic
    mode (``off``, ``good``, ``bad``); JSON lines on stdout; stops when stdin is closed."""
    config = json.loads(sys.stdin.readline())
    reporter = Reporter()
    stop = threading.Event()
    traffic = Traffic()
    clients: list[TimedClient] = []
    try:
        for index in config["indices"]:
            client = ReportingClient(
                config["url"], config["token"], [DEPLOYMENT], index=index, reporter=reporter
            )
            clients.append(client)
            reporter.emit(ready=index, r=client.revision(DEPLOYMENT))
        thread = threading.Thread(
            target=generate,
            args=(clients, traffic, reporter, stop),
            kwargs={"worker_number": config["number"], "rate": config["rate"]},
            name="traffic",
        )
        thread.start()
        for line in sys.stdin:  # until the parent closes it
            traffic.mode = line.strip()
        stop.set()
        thread.join()
    finally:
        closing = [threading.Thread(target=client.close) for client in clients]
        for closer in closing:
            closer.start()
        for closer in closing:
            closer.join()
    stats = {
        "state_updates": sum(c.stats.state_updates for c in clients),
        "stream_reconnects": sum(c.stats.stream_reconnects for c in clients),
        "batches_sent": sum(c.stats.batches_sent for c in clients),
        "batches_dropped": sum(c.stats.batches_dropped for c in clients),
        "cpu_ms": round(time.process_time() * 1e3),
    }
    reporter.emit(done=True, stats=stats)
    return 0


# -- the fleet, seen from the parent -------------------------------------------------------


@dataclass
class TrafficFleet(Fleet):
    """``bench/propagation.py``'s fleet, plus each worker's traffic mode and when it began."""

    workers: int = 0
    modes: dict[int, tuple[str, float]] = field(default_factory=dict)  # worker -> (mode, since)

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            message = json.loads(line)
            with self.changed:
                if "mode" in message:
                    self.modes[int(message["w"])] = (str(message["mode"]), float(message["t"]))
                elif "ready" in message:
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

    def set_traffic(self, mode: str, timeout: float = 10.0) -> float:
        """Every worker's traffic in ``mode``; returns when the first of them began it."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(mode + "\n")
            process.stdin.flush()
        with self.changed:
            switched = self.changed.wait_for(
                lambda: (
                    len(self.modes) == self.workers
                    and all(m == mode for m, _ in self.modes.values())
                ),
                timeout,
            )
            if not switched:
                raise TimeoutError(f"not every worker switched its traffic to {mode!r}")
            return min(t for _, t in self.modes.values())

    def last_served(self, revision: int) -> float | None:
        """When the last client first served ``revision`` or a later one (None: one has not)."""
        served = self.served_at(revision)
        if any(t is None for t in served):
            return None
        return max(t for t in served if t is not None)


@contextlib.contextmanager
def fleet(url: str, token: str, args: argparse.Namespace, log_dir: Path) -> Iterator[TrafficFleet]:
    """``--workers`` processes running ``--clients`` clients between them, stopped after."""
    split = shares(args)
    running = TrafficFleet("push", args.clients, workers=len(split))
    configs = [
        {"url": url, "token": token, "indices": indices, "number": number, "rate": args.rate}
        for number, indices in enumerate(split)
    ]
    with workers(running, Path(__file__).resolve(), configs, log_dir, "worker"):
        yield running


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one backend measured (milliseconds)."""

    backend: str
    manual_ms: list[float] = field(default_factory=list)  # request sent -> last client
    manual_commit_ms: list[float] = field(default_factory=list)  # response -> last client
    manual_request_ms: list[float] = field(default_factory=list)  # the POST itself
    auto_ms: list[float] = field(default_factory=list)  # bad traffic -> last client
    auto_event_ms: list[float] = field(default_factory=list)  # AutoRollbackTriggered -> last
    auto_detect_ms: list[float] = field(default_factory=list)  # bad traffic -> the event
    auto_reasons: list[str] = field(default_factory=list)
    own_ms: dict[str, list[float]] = field(default_factory=dict)  # records' duration_ms
    first_stage_ms: list[float] = field(default_factory=list)  # started_at -> stage 1 applied
    stage_gap_ms: list[float] = field(default_factory=list)  # gap minus the interval
    staged_total_ms: list[float] = field(default_factory=list)  # whole rollback minus waits
    stage_clients_ms: list[float] = field(default_factory=list)  # applied_at -> last client
    stages: int = 0
    missed: list[str] = field(default_factory=list)
    server_cores: dict[str, float] = field(default_factory=dict)
    postgres_cores: dict[str, float] = field(default_factory=dict)
    fleet_seconds: float = 0.0  # how long the client processes ran
    stats: dict[str, int] = field(default_factory=dict)


def moment(text: str) -> float:
    """A timestamp of the API (ISO 8601, with its zone) as ``time.time()`` seconds."""
    return datetime.fromisoformat(text).timestamp()


class EventCursor:
    """Reads the stored events of the deployment that are newer than the last ones read."""

    def __init__(self, admin: httpx.Client) -> None:
        self._admin = admin
        self._after = 0

    def new(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page: list[dict[str, Any]] = api(
                self._admin,
                "GET",
                "/api/v1/events/log",
                expect=200,
                params={"deployment": DEPLOYMENT, "after": self._after, "limit": 1000},
            )
            if not page:
                return found
            found.extend(page)
            self._after = max(int(event["id"]) for event in page)


def start_canary(
    admin: httpx.Client, running: TrafficFleet, args: argparse.Namespace, percent: float
) -> int:
    """A new canary, seen by every client; returns its revision."""
    canary = api(
        admin,
        "POST",
        f"/api/v1/deployments/{DEPLOYMENT}/canary",
        expect=200,
        json={"policy": f"{POLICY}@2", "percent": percent},
    )
    revision = int(canary["revision"])
    if not running.wait(revision, args.timeout):
        raise TimeoutError(f"not every client saw the new canary (revision {revision}) in time")
    return revision


def measure_manual(
    running: TrafficFleet,
    admin: httpx.Client,
    args: argparse.Namespace,
    outcome: Outcome,
    rng: random.Random,
) -> None:
    for round_ in range(args.warmup + args.manual):
        time.sleep(rng.uniform(0.1, 0.5))
        sent = time.time()
        record = api(
            admin, "POST", ROLLBACKS, expect=201, json={"reason": "benchmark: manual rollback"}
        )
        committed = time.time()
        revision = int(record["revision_after"])
        running.wait(revision, args.timeout)
        last = running.last_served(revision)
        if round_ >= args.warmup:
            if last is None:
                outcome.missed.append(f"manual round {round_ + 1}: not every client served it")
            else:
                outcome.manual_ms.append((last - sent) * 1e3)
                outcome.manual_commit_ms.append((last - committed) * 1e3)
                outcome.manual_request_ms.append((committed - sent) * 1e3)
                outcome.own_ms.setdefault("manual", []).append(float(record["duration_ms"]))
        start_canary(admin, running, args, CANARY_PERCENT)
        progress("manual", round_, args.warmup + args.manual)


def measure_automatic(
    running: TrafficFleet,
    admin: httpx.Client,
    args: argparse.Namespace,
    outcome: Outcome,
    rng: random.Random,
) -> None:
    """Starts and ends with a running 10 % canary and good traffic."""
    events = EventCursor(admin)
    canary = int(api(admin, "GET", f"/api/v1/deployments/{DEPLOYMENT}", expect=200)["revision"])
    for round_ in range(args.warmup + args.automatic):
        events.new()  # skip what happened so far
        time.sleep(rng.uniform(2.0, 4.0))  # good seconds first; bad from a random phase
        bad_since = running.set_traffic(BAD)
        seen = running.wait(canary + 1, args.auto_timeout)
        running.set_traffic(GOOD)
        if not seen:
            raise TimeoutError(f"automatic round {round_ + 1}: no rollback reached every client")
        timed = automatic_times(running, admin, events, canary, bad_since)
        if isinstance(timed, str):
            outcome.missed.append(f"automatic round {round_ + 1}: {timed}")
        elif round_ >= args.warmup:
            end_to_end, from_event, detection, reason, own = timed
            outcome.own_ms.setdefault("automatic", []).append(own)
            outcome.auto_ms.append(end_to_end)
            outcome.auto_event_ms.append(from_event)
            outcome.auto_detect_ms.append(detection)
            outcome.auto_reasons.append(reason)
        canary = start_canary(admin, running, args, CANARY_PERCENT)
        progress("automatic", round_, args.warmup + args.automatic)


def automatic_times(
    running: TrafficFleet, admin: httpx.Client, events: EventCursor, canary: int, bad_since: float
) -> tuple[float, float, float, str, float] | str:
    """The automatic rollback of the canary at revision ``canary``: bad traffic to the last
    client, its event to the last client, bad traffic to its event (ms), its reason and its
    own ``duration_ms``; or what went wrong."""
    record = api(admin, "GET", ROLLBACKS, expect=200, params={"limit": 1})[0]
    if record["kind"] != "auto" or int(record["revision_before"]) != canary:
        return f"the canary ended otherwise: {record['kind']} {record['reason']}"
    triggered = [
        event
        for event in events.new()
        if event["type"] == AUTO_TRIGGERED and event["data"]["rollback_id"] == record["id"]
    ]
    last = running.last_served(int(record["revision_after"]))
    if not triggered or last is None:
        return "no AutoRollbackTriggered event, or a client did not serve the rollback"
    decided = moment(triggered[0]["time"])
    return (
        (last - bad_since) * 1e3,
        (last - decided) * 1e3,
        (decided - bad_since) * 1e3,
        str(triggered[0]["data"]["reason"]),
        float(record["duration_ms"]),
    )


def measure_staged(
    running: TrafficFleet,
    admin: httpx.Client,
    args: argparse.Namespace,
    outcome: Outcome,
    rng: random.Random,
) -> None:
    changes = {
        "staged_rollback": {
            "stage_interval_seconds": args.interval,
            "evaluate_between_stages": False,
        }
    }
    api(
        admin,
        "PATCH",
        f"/api/v1/deployments/{DEPLOYMENT}/config",
        expect=200,
        json={"changes": changes},
    )
    api(admin, "POST", ROLLBACKS, expect=201, json={"reason": "benchmark: before staged"})
    for round_ in range(args.warmup + args.staged):
        start_canary(admin, running, args, args.staged_percent)
        time.sleep(rng.uniform(0.1, 0.5))
        started = api(
            admin,
            "POST",
            ROLLBACKS,
            expect=201,
            json={"reason": "benchmark: staged rollback", "staged": True},
        )
        record = started
        deadline = time.monotonic() + args.interval * (len(started["stages"]) + 2) + 30
        while record["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            record = api(admin, "GET", f"/api/v1/rollbacks/{started['id']}", expect=200)
        label = f"staged round {round_ + 1}"
        if record["status"] != "completed" or record["error"]:
            outcome.missed.append(f"{label}: {record['status']} {record['error']}")
            continue
        running.wait(int(record["revision_after"]), args.timeout)
        stages = record["stages"]
        applied = [moment(stage["applied_at"]) for stage in stages]
        if round_ >= args.warmup:
            outcome.stages = len(stages)
            begun = moment(record["started_at"])
            outcome.first_stage_ms.append((applied[0] - begun) * 1e3)
            outcome.stage_gap_ms.extend(
                (later - earlier - args.interval) * 1e3 for earlier, later in pairwise(applied)
            )
            waits = args.interval * (len(stages) - 1)
            outcome.staged_total_ms.append((moment(record["finished_at"]) - begun - waits) * 1e3)
            for stage, at in zip(stages, applied, strict=True):
                last = running.last_served(int(stage["revision"]))
                if last is None:
                    outcome.missed.append(f"{label}: a client missed stage {stage['name']}")
                else:
                    outcome.stage_clients_ms.append((last - at) * 1e3)
        progress("staged", round_, args.warmup + args.staged)


def progress(what: str, round_: int, rounds: int) -> None:
    if (round_ + 1) % 5 == 0 or round_ + 1 == rounds:
        print(f"  {what}: round {round_ + 1}/{rounds}", flush=True)


def run_backend(label: str, args: argparse.Namespace, lifecycle: list[str]) -> Outcome:
    outcome = Outcome(label)
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        served = seeded_server(stack, label, args, lifecycle, "rb")
        url, admin, token, pid, data_dir = (
            served.url, served.admin, served.token, served.pid, served.data_dir,
        )  # fmt: skip
        print(f"{label}: starting {args.clients} clients in {args.workers} processes", flush=True)
        fleet_started = time.perf_counter()
        with fleet(url, token, args, data_dir) as running:
            running.wait_ready(120)
            phases = (
                ("manual", measure_manual),
                ("automatic", measure_automatic),
                ("staged", measure_staged),
            )
            for name, phase in phases:
                running.set_traffic(GOOD)
                started, mark = time.perf_counter(), cpu_mark(pid)
                phase(running, admin, args, outcome, rng)
                seconds = time.perf_counter() - started
                busy = cpu_since(pid, mark)
                outcome.server_cores[name] = busy["server"] / seconds
                if label != "sqlite":
                    outcome.postgres_cores[name] = busy["postgres"] / seconds
            running.set_traffic(OFF)
        outcome.stats = dict(running.stats)
        outcome.fleet_seconds = time.perf_counter() - fleet_started
        verdict = api(admin, "GET", "/api/v1/audit/verify", expect=200)
        if not verdict["ok"]:
            outcome.missed.append(f"the audit chain does not verify: {verdict}")
        lifecycle.append(f"{label}: audit chain of {verdict['checked']} records checked")
    return outcome


# -- reporting -----------------------------------------------------------------------------


def stats_cells(values: Sequence[float]) -> list[str]:
    if not values:
        return ["0", "-", "-", "-"]
    return [
        str(len(values)),
        f"{statistics.median(values):.1f}",
        f"{p99(values):.1f}",
        f"{max(values):.1f}",
    ]


def end_to_end_table(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    header = ["backend", "clients", "rollback", "timed", "samples", "p50 ms", "p99 ms"]
    header += ["max ms", "goal (p99)"]
    rows = [header]
    for outcome in outcomes:
        lines = (
            ("manual", "request sent -> last client", outcome.manual_ms, True),
            ("manual", "response -> last client", outcome.manual_commit_ms, False),
            ("automatic", "bad traffic starts -> last client", outcome.auto_ms, True),
            ("automatic", "AutoRollbackTriggered -> last client", outcome.auto_event_ms, True),
            ("automatic", "bad traffic -> AutoRollbackTriggered", outcome.auto_detect_ms, False),
        )
        for kind, timed, values, goal in lines:
            verdict = ""
            if goal and values:
                high = p99(values)
                word = "ok" if high < GOAL_MS else "over"
                verdict = f"< {GOAL_MS:g} ms ({word} {high / GOAL_MS:.2f})"
            rows.append(
                [outcome.backend, str(args.clients), kind, timed, *stats_cells(values), verdict]
            )
    return markdown_table(rows, numeric={1, 4, 5, 6, 7})


def staged_table(outcomes: Sequence[Outcome], args: argparse.Namespace) -> str:
    header = ["backend", "interval s", "stages", "rollbacks", "timed", "samples", "median ms"]
    header += ["p99 ms", "max ms"]
    rows = [header]
    for outcome in outcomes:
        lines = (
            ("first stage applied - started_at", outcome.first_stage_ms),
            ("gap between stages - interval", outcome.stage_gap_ms),
            ("whole rollback - its waits", outcome.staged_total_ms),
            ("stage applied_at -> last client", outcome.stage_clients_ms),
        )
        for timed, values in lines:
            rows.append(
                [
                    outcome.backend,
                    f"{args.interval:g}",
                    str(outcome.stages),
                    str(len(outcome.staged_total_ms)),
                    timed,
                    *stats_cells(values),
                ]
            )
    return markdown_table(rows, numeric={1, 2, 3, 5, 6, 7, 8})


def run(args: argparse.Namespace) -> int:
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    lifecycle: list[str] = []
    began = time.perf_counter()
    outcomes = [run_backend(label, args, lifecycle) for label in labels]
    took = time.perf_counter() - began
    print()
    print(
        f"Server: `canaryguard serve` on loopback, one deployment; {args.clients} SDK clients in "
        f"{args.workers} processes on {os.cpu_count()} shared cores, each reporting {args.rate:g} "
        f"requests/s (flushed every second); {args.warmup} unrecorded round(s) before each part; "
        f"{took:.0f} s in all."
    )
    print()
    print(
        f"Immediate rollback, end to end ({args.manual} manual, {args.automatic} automatic "
        f"rollbacks of a {CANARY_PERCENT} % canary; the time the last of {args.clients} clients "
        "served the rolled-back revision):"
    )
    print()
    print(end_to_end_table(outcomes, args))
    print()
    print(
        f"Staged rollback ({args.staged} rollbacks from a {args.staged_percent:g} % canary, "
        f"stage_interval_seconds {args.interval:g}, evaluate_between_stages false; times from "
        "the rollback records, the last row from the clients):"
    )
    print()
    print(staged_table(outcomes, args))
    print()
    for outcome in outcomes:
        cores = ", ".join(f"{k} {v:.2f}" for k, v in outcome.server_cores.items())
        print(f"{outcome.backend}: server cores busy per part: {cores}")
        if outcome.postgres_cores:
            cores = ", ".join(f"{k} {v:.2f}" for k, v in outcome.postgres_cores.items())
            print(f"{outcome.backend}: postgres cores busy per part: {cores}")
        if outcome.manual_request_ms:
            print(
                f"{outcome.backend}: the manual rollback request itself took "
                f"{statistics.median(outcome.manual_request_ms):.1f} ms (median)"
            )
        for kind, own in outcome.own_ms.items():
            print(
                f"{outcome.backend}: {kind} rollbacks' own duration_ms (up to their commit): "
                f"median {statistics.median(own):.1f}, max {max(own):.1f}"
            )
        lasts = ", ".join(f"{value:.0f}" for value in sorted(outcome.manual_ms))
        print(f"{outcome.backend}: manual, request sent -> last client, ms, sorted: {lasts}")
        autos = ", ".join(f"{value:.0f}" for value in sorted(outcome.auto_ms))
        print(f"{outcome.backend}: automatic, bad traffic -> last client, ms, sorted: {autos}")
        if outcome.auto_reasons:
            reason = re.sub(
                r"e-value ([\d,]+)",
                lambda m: f"e-value ~1e{len(m[1].replace(',', '')) - 1}",
                outcome.auto_reasons[0],
            )
            print(f"{outcome.backend}: an automatic rollback's reason: {reason}")
        stats = dict(outcome.stats)
        clients_cores = stats.pop("cpu_ms", 0) / 1e3 / max(outcome.fleet_seconds, 1e-9)
        print(
            f"{outcome.backend}: the client processes kept {clients_cores:.2f} cores busy; "
            f"client stats {stats}"
        )
        for missed in outcome.missed:
            print(f"{outcome.backend}: MISSED {missed}")
    for note in lifecycle:
        print(note)
    return 0 if all(not o.missed and o.manual_ms and o.auto_ms for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--worker"]:
        return worker()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--clients", type=positive, default=100)
    parser.add_argument("--workers", type=positive, default=4, help="client processes")
    parser.add_argument("--rate", type=positive_seconds, default=100.0, help="req/s per client")
    parser.add_argument("--manual", type=positive, default=20, help="measured manual rollbacks")
    parser.add_argument("--automatic", type=positive, default=10, help="measured automatic ones")
    parser.add_argument("--staged", type=positive, default=20, help="measured staged ones")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds of each part")
    parser.add_argument("--interval", type=positive_seconds, default=1.0, help="between stages")
    parser.add_argument("--staged-percent", type=positive_seconds, default=60.0)
    parser.add_argument(
        "--timeout", type=positive_seconds, default=10.0, help="per change, for all clients"
    )
    parser.add_argument(
        "--auto-timeout", type=positive_seconds, default=30.0, help="for the monitor to act"
    )
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the pauses")
    args = parser.parse_args(argv)
    return run_interruptibly(run, args)


if __name__ == "__main__":
    sys.exit(main())
