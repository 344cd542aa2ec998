"""Benchmark: the client SDK's hot path, its middlewares, and observation ingestion over HTTP.

Run from the repository root::

    .venv/bin/python bench/client.py                  # every part; ingestion on both backends
    .venv/bin/python bench/client.py --parts micro middleware --calls 50000

Every part runs against a real ``canaryguard serve`` process on loopback (started as
``bench/api.py`` starts it: SQLite in a temporary data directory; PostgreSQL with ``--db`` and a
fresh schema, dropped at the end), seeded through the REST API: two versions of the example
security policy, ``shop/security`` with a 10 % canary by user id for the SDK, and
``--deployments`` deployments with a 10 % canary each for ingestion. The SDK holds a reporter
token.

- ``micro``: ``Client.assign(name, user_id=...)``, ``Client.record(...)`` and an empty
  ``with Client.track(...)`` block, in-process, timed with ``time.perf_counter_ns`` in batches of
  ``--batch`` calls (per-call cost = batch time / batch size, so the p99 is over batch means),
  next to a baseline of one dict lookup and one ``random.random()`` per call in the same loop.
  The four run in a shuffled order per round. The client's threads run as in production (its
  state stream is open, its sender flushes to the server every second); the garbage collector
  stays on.
- ``middleware``: a tiny Starlette app called in-process through ``httpx.ASGITransport``, and a
  WSGI app called directly, each with and without the SDK's middleware: the same number of
  requests each, in alternating batches (which one goes first swaps every round); the added cost
  is the difference of the medians of the per-request batch means.
- ``ingest``: a separate load process (this file in its hidden ``--worker`` mode) keeps
  ``--concurrency`` ``POST /api/v1/observations`` in flight, each a gzip batch of
  ``--batch-size`` pre-aggregated observations (1,000 and 5,000 by default) with the fields
  ``Client._send`` sends, a fresh batch id each, for ``--warmup`` + ``--seconds`` seconds per
  body format (``--formats``: the compact binary batch the SDK sends, and JSON) and batch size,
  one after the other on the same server; the server process's CPU time comes from /proc. Every
  batch covers the same keys (every deployment and variant over the latest few seconds, as many
  clients reporting the same recent seconds do) with its own random outcomes. Afterwards the
  requests counted by the server must equal the ones the load generator had accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import json
import math
import os
import random
import secrets
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from canaryguard.client import ASGIMiddleware, Assignment, Client, WSGIMiddleware
from canaryguard.domain.histogram import bucket_for
from canaryguard.domain.observation_batch import CONTENT_TYPE, MAGIC, VERSION, encode

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import (
    CANARY_PERCENT,
    PG_DSN,
    api,
    cpu_seconds,
    postgres_cpu,
    postgres_schema,
    running_server,
)
from bench.api import seed as seed_deployments
from bench.options import positive, positive_seconds, run_interruptibly
from bench.tables import markdown_table

SDK_DEPLOYMENT = "shop/security"
GOAL_US = 2.0  # median per assign / record call on CPython 3.11
GOAL_PER_CORE = 200_000  # observations per second per core of server CPU
USERS = 10_000  # distinct user ids the micro-benchmarks cycle through
TEMPLATES = 8  # distinct observation batches the load generator rotates through
WINDOW_SECONDS = 300  # the evaluation window the server's status covers
PARTS = ("micro", "middleware", "ingest")
COMPACT, JSON = "compact", "json"
FORMATS = (COMPACT, JSON)

BASELINE = "baseline: dict lookup + random.random()"
ASSIGN = "Client.assign(name, user_id=...)"
RECORD = "Client.record(assignment, ok=, latency_ms=)"
TRACK = "with Client.track(assignment): pass"
MICRO_OPS = (BASELINE, ASSIGN, RECORD, TRACK)
WITHOUT, WITH = "without", "with"


@dataclass
class Server:
    label: str
    url: str
    admin: str
    reporter: str
    pid: int
    names: list[str]
    revisions: dict[str, int]


@dataclass
class Results:
    micro_ns: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in MICRO_OPS})
    middleware_ns: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    ingest: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recorded: int = 0  # outcomes the SDK recorded (warm-up included): the server must count them


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def user_ids() -> list[str]:
    return [f"user-{i:06d}" for i in range(USERS)]


# -- (a) the hot path, in-process --------------------------------------------------------


def micro_ops(client: Client) -> dict[str, Callable[[Sequence[str]], None]]:
    """One function per operation; each makes one call per user id in its batch."""
    assignment = client.assign(SDK_DEPLOYMENT, user_id="warm-up")
    states = {SDK_DEPLOYMENT: assignment}

    def baseline(users: Sequence[str]) -> None:
        get, rnd, name = states.get, random.random, SDK_DEPLOYMENT
        for _user in users:
            get(name)
            rnd()

    def assign(users: Sequence[str]) -> None:
        call, name = client.assign, SDK_DEPLOYMENT
        for user in users:
            call(name, user_id=user)

    def record(users: Sequence[str]) -> None:
        call = client.record
        for _user in users:
            call(assignment, ok=True, latency_ms=12.5)

    def track(users: Sequence[str]) -> None:
        call = client.track
        for _user in users:
            with call(assignment):
                pass

    return {BASELINE: baseline, ASSIGN: assign, RECORD: record, TRACK: track}


def run_micro(client: Client, args: argparse.Namespace, results: Results) -> None:
    ops = micro_ops(client)
    users = user_ids()
    chunks = [users[i : i + args.batch] for i in range(0, USERS - args.batch + 1, args.batch)]
    rng = random.Random(args.seed)
    order = list(MICRO_OPS)
    rounds = max(args.calls // args.batch, 1)
    warmup = max(rounds // 20, 10)
    gc.collect()
    for round_ in range(warmup + rounds):
        rng.shuffle(order)
        chunk = chunks[round_ % len(chunks)]
        for op in order:
            run = ops[op]
            started = time.perf_counter_ns()
            run(chunk)
            elapsed = time.perf_counter_ns() - started
            if round_ >= warmup:
                results.micro_ns[op].append(elapsed / len(chunk))
        results.recorded += 2 * len(chunk)  # record and track
    on_canary = sum(
        client.assign(SDK_DEPLOYMENT, user_id=user).variant.value == "canary" for user in users
    )
    results.notes.append(
        f"assignment check: {on_canary} of {len(users)} user ids on the canary "
        f"({on_canary / len(users):.1%}; the split is {CANARY_PERCENT} % by user id)"
    )


def micro_table(results: Results, batch: int) -> str:
    base = statistics.median(results.micro_ns[BASELINE])
    header = ["operation", "calls", "median µs", "p99 µs", "median / baseline", "goal (median)"]
    rows = [header]
    for op in MICRO_OPS:
        values = results.micro_ns[op]
        median = statistics.median(values)
        goal = ""
        if op in (ASSIGN, RECORD):
            verdict = "ok" if median / 1e3 < GOAL_US else "over"
            goal = f"< {GOAL_US:g} µs ({verdict})"
        rows.append(
            [
                op,
                str(len(values) * batch),
                f"{median / 1e3:.2f}",
                f"{p99(values) / 1e3:.2f}",
                f"{median / base:.1f}",
                goal,
            ]
        )
    return markdown_table(rows, numeric={1, 2, 3, 4})


# -- (b) middleware cost per request -----------------------------------------------------


def variant_of(assignment: object) -> bytes:
    return assignment.variant.value.encode() if isinstance(assignment, Assignment) else b"none"


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(variant_of(getattr(request.state, "canaryguard", None)))


def wsgi_hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [variant_of(environ.get("canaryguard.assignment"))]


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def call_wsgi(app: WsgiApp, environ: dict[str, Any]) -> bytes:
    """What a WSGI server does with one request: call, iterate the body, close it."""
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses.append(status)

    body = app(environ, start_response)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def expect(label: str, text: bytes) -> None:
    """The wrapped app saw an assignment, the bare one none: the two really differ."""
    if (text == b"none") != (label == WITHOUT):
        raise RuntimeError(f"the app {label} the middleware answered {text!r}")


async def run_asgi(client: Client, args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """Per-request times (batch means) without and with the middleware; requests wrapped."""
    app = Starlette(routes=[Route("/", hello)])
    targets: dict[str, Any] = {
        WITHOUT: app,
        WITH: ASGIMiddleware(app, client=client, deployment=SDK_DEPLOYMENT),
    }
    times: dict[str, list[float]] = {WITHOUT: [], WITH: []}
    users = user_ids()
    batch = args.asgi_batch
    rounds = max(args.asgi_requests // batch, 1)
    warmup = max(rounds // 20, 5)
    async with contextlib.AsyncExitStack() as stack:
        https = {
            label: await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url="http://b")
            )
            for label, target in targets.items()
        }
        for round_ in range(warmup + rounds):
            order = (WITHOUT, WITH) if round_ % 2 == 0 else (WITH, WITHOUT)
            first = (round_ * batch) % (USERS - batch)
            for label in order:
                http = https[label]
                started = time.perf_counter_ns()
                for user in users[first : first + batch]:
                    response = await http.get("/", headers={"x-user-id": user})
                elapsed = time.perf_counter_ns() - started
                expect(label, response.content)
                if round_ >= warmup:
                    times[label].append(elapsed / batch)
    return times, (warmup + rounds) * batch


def run_wsgi(client: Client, args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """Per-request times (batch means) without and with the middleware; requests wrapped."""
    targets: dict[str, WsgiApp] = {
        WITHOUT: wsgi_hello,
        WITH: WSGIMiddleware(wsgi_hello, client=client, deployment=SDK_DEPLOYMENT),
    }
    template = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }
    environs = [{**template, "HTTP_X_USER_ID": user} for user in user_ids()]
    times: dict[str, list[float]] = {WITHOUT: [], WITH: []}
    batch = args.wsgi_batch
    rounds = max(args.wsgi_requests // batch, 1)
    warmup = max(rounds // 20, 5)
    for round_ in range(warmup + rounds):
        order = (WITHOUT, WITH) if round_ % 2 == 0 else (WITH, WITHOUT)
        first = (round_ * batch) % (USERS - batch)
        for label in order:
            app = targets[label]
            chunk = [dict(environ) for environ in environs[first : first + batch]]
            started = time.perf_counter_ns()
            for environ in chunk:
                text = call_wsgi(app, environ)
            elapsed = time.perf_counter_ns() - started
            expect(label, text)
            if round_ >= warmup:
                times[label].append(elapsed / batch)
    return times, (warmup + rounds) * batch


def middleware_table(results: Results, args: argparse.Namespace) -> str:
    header = [
        "stack",
        "requests each",
        "median µs without",
        "median µs with",
        "added µs / request",
        "added %",
    ]
    rows = [header]
    batches = {"ASGI": args.asgi_batch, "WSGI": args.wsgi_batch}
    for stack, times in results.middleware_ns.items():
        without = statistics.median(times[WITHOUT]) / 1e3
        with_ = statistics.median(times[WITH]) / 1e3
        rows.append(
            [
                stack,
                str(len(times[WITH]) * batches[stack.split()[0]]),
                f"{without:.2f}",
                f"{with_:.2f}",
                f"{with_ - without:.2f}",
                f"{(with_ - without) / without:.0%}",
            ]
        )
    return markdown_table(rows, numeric={1, 2, 3, 4, 5})


# -- (c) ingestion: the load generator (a separate process) ------------------------------


@dataclass
class Template:
    """One batch body, compressed up to its batch id; ``body`` finishes it for one id.

    JSON: ``{"observations": [...], "batch_id": "<id>"}``, the same fields as the SDK's JSON
    body (which puts the id first). The compressor is copied after the observations, so every
    request's body is a complete gzip stream at level 9 without compressing 1,000 observations
    again (that takes ~0.1 s at level 9: it would make the load generator the bottleneck).

    Compact (``domain.observation_batch``, what the SDK sends): the batch id sits in the first
    bytes, so the body is two gzip members, the few header bytes with the id compressed per
    request and the rest compressed once at level 9 (the server inflates every member).
    """

    form: str
    head: bytes
    compressor: Any  # zlib.Compress (not exported under that name); None for compact
    observations: int
    requests: int
    buckets: int
    raw_bytes: int

    def body(self, batch_id: str) -> bytes:
        if self.form == COMPACT:
            identity = batch_id.encode()
            first = MAGIC + struct.pack("<BB", VERSION, len(identity)) + identity
            return gzip.compress(first, compresslevel=1) + self.head
        tail = self.compressor.copy()
        finished: bytes = tail.compress(batch_id.encode() + b'"}') + tail.flush()
        return self.head + finished


def observation(
    rng: random.Random, name: str, revision: int, variant: str, second: int
) -> dict[str, Any]:
    """One client's second of one variant: as ``OutcomeBuffer.drain`` makes it."""
    requests = rng.randint(20, 200) if variant == "stable" else rng.randint(1, 20)
    latencies = [rng.lognormvariate(math.log(40.0), 0.5) for _ in range(requests)]
    histogram: dict[str, int] = {}
    for latency in latencies:
        bucket = str(bucket_for(latency))
        histogram[bucket] = histogram.get(bucket, 0) + 1
    return {
        "deployment": name,
        "revision": revision,
        "variant": variant,
        "second": second,
        "requests": requests,
        "errors": sum(rng.random() < 0.01 for _ in range(requests)),
        "latency_sum_ms": sum(latencies),
        "latency_max_ms": max(latencies),
        "histogram": histogram,
    }


def templates(config: dict[str, Any], rng: random.Random, form: str) -> list[Template]:
    """``TEMPLATES`` batches over the same keys, every deployment and variant in the latest few
    seconds (as many clients report the same recent seconds), each with its own random outcomes.
    So the server merges each batch into cells it has, and writes one delta row per cell a
    second: as many as a batch holds, the same for every batch size per deployment count."""
    revisions: dict[str, int] = config["revisions"]
    size: int = config["batch_size"]
    per_second = 2 * len(revisions)
    seconds = math.ceil(size / per_second)
    if seconds > WINDOW_SECONDS - 10:
        raise ValueError(
            f"batches of {size} over {len(revisions)} deployments span more than the server's "
            "5-minute window: use fewer observations per batch or more --deployments"
        )
    first = int(time.time()) - 5 - seconds
    keys = [
        (name, revision, variant, first + offset)
        for offset in range(seconds)
        for name, revision in revisions.items()
        for variant in ("stable", "canary")
    ][:size]
    made = []
    for _ in range(TEMPLATES):
        batch = [observation(rng, *key) for key in keys]
        facts = {
            "observations": len(batch),
            "requests": sum(o["requests"] for o in batch),
            "buckets": sum(len(o["histogram"]) for o in batch),
        }
        if form == COMPACT:
            rest = encode(batch)[len(MAGIC) + 2 :]  # after the magic, version and id length 0
            made.append(
                Template(
                    form,
                    gzip.compress(rest, compresslevel=9),
                    None,
                    raw_bytes=len(rest) + len(MAGIC) + 2 + 24,
                    **facts,
                )
            )
            continue
        head = b'{"observations": ' + json.dumps(batch).encode() + b', "batch_id": "'
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        made.append(
            Template(
                form,
                compressor.compress(head),
                compressor,
                raw_bytes=len(head) + 26,
                **facts,
            )
        )
    return made


CpuMark = tuple[float, float, dict[int, float]]


def cpu_mark(server_pid: int) -> CpuMark:
    return cpu_seconds(server_pid), time.process_time(), postgres_cpu()


def cpu_since(server_pid: int, mark: CpuMark) -> dict[str, float]:
    server, load, postgres = mark
    return {
        "server": cpu_seconds(server_pid) - server,
        "load generator": time.process_time() - load,
        "postgres": sum(cpu - postgres.get(pid, 0.0) for pid, cpu in postgres_cpu().items()),
    }


async def generate_load(config: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(config["seed"])
    made = templates(config, rng, config["format"])
    concurrency: int = config["concurrency"]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {
        "Authorization": f"Bearer {config['token']}",
        "content-type": CONTENT_TYPE if config["format"] == COMPACT else "application/json",
        "content-encoding": "gzip",
    }
    latencies: list[float] = []
    counts = {"batches": 0, "observations": 0, "errors": 0, "requests": 0, "bytes": 0}
    samples: list[str] = []

    async with httpx.AsyncClient(
        base_url=config["url"], headers=headers, limits=limits, timeout=60, trust_env=False
    ) as client:

        async def one(*, record: bool) -> None:
            template = made[rng.randrange(len(made))]
            body = template.body(secrets.token_hex(12))
            started = time.perf_counter_ns()
            try:
                response = await client.post("/api/v1/observations", content=body)
                ok = response.status_code == 202 and not response.json()["duplicate"]
                detail = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            elapsed = (time.perf_counter_ns() - started) / 1e6
            if ok:
                counts["requests"] += template.requests  # warm-up included: the server has them
            if not record:
                return
            latencies.append(elapsed)
            if ok:
                counts["batches"] += 1
                counts["observations"] += template.observations
                counts["bytes"] += len(body)
            else:
                counts["errors"] += 1
                if len(samples) < 5:
                    samples.append(detail)

        async def loop(until: float, *, record: bool) -> None:
            while time.monotonic() < until:
                await one(record=record)

        warm_until = time.monotonic() + config["warmup"]
        await asyncio.gather(*(loop(warm_until, record=False) for _ in range(concurrency)))
        mark = cpu_mark(config["server_pid"])
        started = time.perf_counter()
        until = time.monotonic() + config["seconds"]
        await asyncio.gather(*(loop(until, record=True) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = cpu_since(config["server_pid"], mark)

    prepared = time.perf_counter_ns()
    for _ in range(100):
        made[0].body(secrets.token_hex(12))
    body_ms = (time.perf_counter_ns() - prepared) / 100 / 1e6
    return {
        **counts,
        "seconds": seconds,
        "latencies_ms": latencies,
        "cpu_s": cpu,
        "error_samples": samples,
        "buckets_per_observation": sum(t.buckets for t in made) / sum(t.observations for t in made),
        "raw_bytes": statistics.mean(t.raw_bytes for t in made),
        "body_ms": body_ms,
    }


def worker() -> int:
    """The hidden ``--worker`` mode: a JSON config on stdin, a JSON result on stdout."""
    config = json.loads(sys.stdin.read())
    json.dump(asyncio.run(generate_load(config)), sys.stdout)
    return 0


def run_ingest(
    server: Server, args: argparse.Namespace, form: str, batch_size: int
) -> dict[str, Any]:
    config = {
        "format": form,
        "url": server.url,
        "token": server.reporter,  # on stdin, not on the command line
        "revisions": server.revisions,
        "batch_size": batch_size,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "seed": args.seed,
        "server_pid": server.pid,
    }
    done = subprocess.run(  # noqa: S603 - this interpreter running this file
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=args.warmup + args.seconds + 300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the load generator failed ({done.returncode}) on {server.label}:\n"
            f"{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def check_ingest(server: Server, accepted: int) -> str:
    """The server counted exactly the requests of the batches it accepted."""
    with http_client(server.url, server.admin) as client:
        counted = 0
        for name in server.names:
            metrics = api(client, "GET", f"/api/v1/deployments/{name}/status", expect=200)
            counted += sum(metrics["metrics"][v]["requests"] for v in ("stable", "canary"))
    if counted != accepted:
        raise RuntimeError(
            f"{server.label}: the server counts {counted} requests in its window, the accepted "
            f"batches held {accepted}"
        )
    return (
        f"{server.label}: the server's windows hold exactly the {counted} requests of the "
        "accepted batches (warm-up included)"
    )


def check_recorded(server: Server, client: Client, recorded: int) -> str:
    """After ``close`` (which flushes): the server counts every outcome the SDK recorded."""
    with http_client(server.url, server.admin) as admin:
        status = api(admin, "GET", f"/api/v1/deployments/{SDK_DEPLOYMENT}/status", expect=200)
    counted = sum(status["metrics"][v]["requests"] for v in ("stable", "canary"))
    stats = client.stats
    if counted != recorded:
        raise RuntimeError(
            f"the SDK recorded {recorded} outcomes, the server counts {counted} ({stats})"
        )
    return (
        f"the server counts exactly the {recorded} outcomes the SDK recorded "
        f"({stats.batches_sent} batches sent, {stats.observations_dropped} observations dropped)"
    )


def ingest_table(results: Results, args: argparse.Namespace) -> str:
    header = [
        "backend, body, batch",
        "in flight",
        "seconds",
        "batches",
        "observations/s",
        "server cores busy",
        "obs/s per server core",
        "postgres cores busy",
        "median ms",
        "p99 ms",
        "errors",
        "goal (per core)",
    ]
    rows = [header]
    for label, result in results.ingest.items():
        rate = result["observations"] / result["seconds"]
        server_cpu = result["cpu_s"]["server"]
        per_core = result["observations"] / server_cpu if server_cpu else 0.0
        verdict = "ok" if per_core >= GOAL_PER_CORE else "under"
        postgres = (
            result["cpu_s"]["postgres"] / result["seconds"]
            if not label.startswith("sqlite")
            else None
        )
        rows.append(
            [
                label,
                str(args.concurrency),
                f"{result['seconds']:.1f}",
                str(result["batches"]),
                f"{rate:,.0f}",
                f"{server_cpu / result['seconds']:.2f}",
                f"{per_core:,.0f}",
                "-" if postgres is None else f"{postgres:.2f}",
                f"{statistics.median(result['latencies_ms']):.1f}",
                f"{p99(result['latencies_ms']):.1f}",
                str(result["errors"]),
                f"{GOAL_PER_CORE:,} ({verdict} {per_core / GOAL_PER_CORE:.2f})",
            ]
        )
    return markdown_table(rows, numeric=set(range(1, len(header) - 1)))


# -- servers -------------------------------------------------------------------------------


def http_client(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
    )


@contextlib.contextmanager
def serving(label: str, args: argparse.Namespace, lifecycle: list[str]) -> Iterator[Server]:
    """A seeded ``canaryguard serve`` for ``label``; stopped (and its schema dropped) after."""
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(postgres_schema(args.pg_dsn)) if label != "sqlite" else None
        data_dir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=f"canaryguard-client-{label}-"))
        )
        url, admin, pid = stack.enter_context(running_server(label, data_dir, db_url, lifecycle))
        started = time.perf_counter()
        with http_client(url, admin) as client:
            names, revisions = seed_deployments(client, deployments=args.deployments)
            api(
                client,
                "POST",
                "/api/v1/deployments",
                expect=201,
                json={"name": SDK_DEPLOYMENT, "stable": "security@1"},
            )
            api(
                client,
                "POST",
                f"/api/v1/deployments/{SDK_DEPLOYMENT}/canary",
                expect=200,
                json={"policy": "security@2", "percent": CANARY_PERCENT, "criterion": "user_id"},
            )
            reporter = api(
                client,
                "POST",
                "/api/v1/tokens",
                expect=201,
                json={"name": "bench-sdk", "role": "reporter"},
            )["token"]
        print(
            f"{label}: serving on {url} (pid {pid}); {args.deployments + 1} deployments seeded "
            f"through the API in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        yield Server(label, url, admin, reporter, pid, names, revisions)


# -- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    results = Results()
    lifecycle: list[str] = []
    checks: list[str] = []
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "ingest" not in args.parts:
        labels = labels[:1]
    for index, label in enumerate(labels):
        with serving(label, args, lifecycle) as server:
            if index == 0 and {"micro", "middleware"} & set(args.parts):
                with Client(server.url, server.reporter, [SDK_DEPLOYMENT]) as client:
                    if "micro" in args.parts:
                        print(f"micro: {args.calls} calls per operation", flush=True)
                        run_micro(client, args, results)
                    if "middleware" in args.parts:
                        print(
                            f"middleware: ASGI {args.asgi_requests} and WSGI "
                            f"{args.wsgi_requests} requests each way",
                            flush=True,
                        )
                        asgi, wrapped = asyncio.run(run_asgi(client, args))
                        results.middleware_ns["ASGI (Starlette via httpx.ASGITransport)"] = asgi
                        results.recorded += wrapped
                        wsgi, wrapped = run_wsgi(client, args)
                        results.middleware_ns["WSGI (called directly)"] = wsgi
                        results.recorded += wrapped
                checks.append(check_recorded(server, client, results.recorded))
            if "ingest" in args.parts:
                accepted = 0
                # the formats take turns, and the order flips per backend: neither always runs
                # on the emptier store
                forms = args.formats if index % 2 == 0 else list(reversed(args.formats))
                for batch_size in args.batch_size:
                    for form in forms:
                        print(
                            f"ingest ({label}, {form}, batches of {batch_size}): "
                            f"{args.warmup:g} s warm-up + {args.seconds:g} s, "
                            f"{args.concurrency} in flight",
                            flush=True,
                        )
                        result = run_ingest(server, args, form, batch_size)
                        results.ingest[f"{label}, {form}, {batch_size}"] = result
                        accepted += result["requests"]
                checks.append(check_ingest(server, accepted))
    report(results, args, [*checks, *lifecycle])
    return 0 if all(not r["errors"] for r in results.ingest.values()) else 1


def report(results: Results, args: argparse.Namespace, notes: list[str]) -> None:
    print()
    print(
        f"Python {sys.version.split()[0]} on {os.cpu_count()} shared cores; the SDK client "
        "followed a real `canaryguard serve` (SQLite) on loopback."
    )
    if results.micro_ns[ASSIGN]:
        print()
        print(
            f"Hot path: {args.calls} calls per operation in batches of {args.batch} "
            "(per-call time = batch time / batch size; p99 over the batches):"
        )
        print()
        print(micro_table(results, args.batch))
    if results.middleware_ns:
        print()
        print(
            f"Middleware cost: batches of {args.asgi_batch} (ASGI) / {args.wsgi_batch} (WSGI) "
            "requests, alternating with and without; µs per request:"
        )
        print()
        print(middleware_table(results, args))
    if results.ingest:
        any_result = next(iter(results.ingest.values()))
        sizes = {}
        for label, result in results.ingest.items():
            form, batch_size = label.split(", ")[1:]
            batch_bytes = result["bytes"] / max(result["batches"], 1)
            sizes[form, batch_size] = (
                f"{form} {batch_size}: {result['raw_bytes'] / 1e3:.0f} kB, "
                f"{batch_bytes / 1e3:.0f} kB gzipped"
            )
        print()
        print(
            "Ingestion: POST /api/v1/observations, gzip batches of "
            f"{' and '.join(map(str, args.batch_size))} observations "
            f"({any_result['buckets_per_observation']:.1f} histogram buckets each on average; "
            f"{'; '.join(sizes.values())}), {args.concurrency} in flight from one load process, "
            f"{args.seconds:g} s after {args.warmup:g} s of warm-up each; one after the other on "
            "the same server:"
        )
        print()
        print(ingest_table(results, args))
        for label, result in results.ingest.items():
            busy = result["cpu_s"]["load generator"] / result["seconds"]
            print(
                f"{label}: the load generator was busy {busy:.2f} cores "
                f"({result['body_ms']:.2f} ms to finish one body)"
            )
            for sample in result["error_samples"]:
                print(f"  error: {sample}")
    for note in [*results.notes, *notes]:
        print(note)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--worker"]:
        return worker()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--calls", type=positive, default=200_000, help="per hot-path operation")
    parser.add_argument("--batch", type=positive, default=100, help="calls per timed batch")
    parser.add_argument("--asgi-requests", type=positive, default=20_000, help="each way")
    parser.add_argument("--asgi-batch", type=positive, default=10)
    parser.add_argument("--wsgi-requests", type=positive, default=200_000, help="each way")
    parser.add_argument("--wsgi-batch", type=positive, default=100)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=positive_seconds, default=10.0, help="of ingestion")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first")
    parser.add_argument("--concurrency", type=positive, default=4, help="batches in flight")
    parser.add_argument(
        "--batch-size", type=positive, nargs="+", default=[1000, 5000], help="observations"
    )
    parser.add_argument("--deployments", type=positive, default=100, help="for ingestion")
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="ingestion bodies"
    )
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)
    if args.batch > USERS or args.asgi_batch > USERS // 2 or args.wsgi_batch > USERS // 2:
        parser.error(f"batches hold at most {USERS // 2} calls")
    return run_interruptibly(run, args)


if __name__ == "__main__":
    sys.exit(main())
