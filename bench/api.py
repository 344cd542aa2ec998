"""Benchmark: the REST API under concurrent load, served by the real ``canaryguard serve``.

Run from the repository root::

    .venv/bin/python bench/api.py                  # both backends, 10 s per measurement
    .venv/bin/python bench/api.py --backend sqlite --seconds 5 --concurrency 8

Each backend gets its own server process, ``canaryguard serve --data-dir TMP --port PORT`` on
loopback (SQLite: the embedded default in a temporary data directory; PostgreSQL: ``--db`` with a
fresh schema, dropped at the end). It is seeded through the REST API only: two versions of the
example security policy, ``--deployments`` deployments on the first, and a 10 % canary of the
second on each. Then every backend and operation is measured, in a shuffled order per round, by
a separate load-generator process (this file in its hidden ``--worker`` mode) that keeps
``--concurrency`` requests in flight over keep-alive connections (httpx) for ``--seconds``:

- ``status read``: ``GET /api/v1/deployments/{name}`` of a random deployment;
- ``split change``: ``POST /api/v1/deployments/{name}/split`` of a random deployment to a random
  percent between 1 and 99 with at most two decimals (writes serialise in the database).

Each measurement starts with ``--warmup`` unrecorded seconds on the same connections. Any
response other than 2xx, and any transport error, is an error. Afterwards the revisions must
have grown by exactly the number of splits that succeeded, and the audit chain must verify.
For context it also prints the CPU that the server, the load generator and PostgreSQL used in
each measured window, and how many PostgreSQL sessions were opened and closed in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from canaryguard.domain.documents import format_for_filename, parse_document

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.options import positive, positive_seconds, run_interruptibly
from bench.tables import markdown_table

POLICY = "security"
PG_DSN = os.environ.get("CANARYGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
HOST = "127.0.0.1"  # loopback only, for the server and the load
CANARYGUARD = Path(sys.executable).parent / "canaryguard"

READ_OP = "status read"
SPLIT_OP = "split change"
OPERATIONS = (READ_OP, SPLIT_OP)
CANARY_PERCENT = 10
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
ERROR_SAMPLES = 5  # error responses kept per measurement, to show what went wrong


@dataclass
class Measurement:
    """What the load generator saw for one backend and operation (summed over rounds)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    warmup_ok: int = 0
    error_samples: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    cpu_s: Counter[str] = field(default_factory=Counter)  # busy CPU seconds per process group
    pg_sessions: int = 0  # PostgreSQL sessions that ended in the measured seconds

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def ok(self) -> int:
        return self.requests - self.errors


@dataclass
class Backend:
    """One running server under test, with what was measured on it."""

    label: str
    url: str
    token: str
    pid: int
    names: list[str]
    seeded_revisions: dict[str, int]
    seed_seconds: float
    results: dict[str, Measurement] = field(
        default_factory=lambda: {op: Measurement() for op in OPERATIONS}
    )
    notes: list[str] = field(default_factory=list)


# -- the load generator (a separate process) -----------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the ")" closing the name, utime and stime are the 12th and 13th fields
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every postgres process, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


CpuMark = tuple[float, float, dict[int, float]]  # server, load generator, postgres by pid


def cpu_mark(server_pid: int) -> CpuMark:
    return cpu_seconds(server_pid), time.process_time(), postgres_cpu()


def cpu_since(server_pid: int, mark: CpuMark) -> dict[str, float]:
    """Busy CPU seconds since ``mark``. Postgres counts the processes alive at both ends, and new
    ones from their start; one that exited in between is missed."""
    server, load, postgres = mark
    return {
        "server": cpu_seconds(server_pid) - server,
        "load generator": time.process_time() - load,
        "postgres": sum(cpu - postgres.get(pid, 0.0) for pid, cpu in postgres_cpu().items()),
    }


async def postgres_sessions(dsn: str | None) -> int:
    """Sessions the database has seen end so far (0 without PostgreSQL); this probe's own is
    counted once it ends."""
    if dsn is None:
        return 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def generate_load(config: dict[str, Any]) -> dict[str, Any]:
    """Keep ``concurrency`` requests in flight: ``warmup`` seconds unrecorded, then ``seconds``."""
    rng = random.Random(config["seed"])
    names: list[str] = config["names"]
    operation: str = config["operation"]
    concurrency: int = config["concurrency"]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {config['token']}"}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []
    counts = {"errors": 0, "warmup_ok": 0}

    async with httpx.AsyncClient(
        base_url=config["url"], headers=headers, limits=limits, timeout=30, trust_env=False
    ) as client:

        async def one(*, record: bool) -> None:
            name = rng.choice(names)
            started = time.perf_counter_ns()
            try:
                if operation == READ_OP:
                    response = await client.get(f"/api/v1/deployments/{name}")
                else:
                    percent = rng.randint(100, 9900) / 100  # 1.00 .. 99.00, two decimals
                    response = await client.post(
                        f"/api/v1/deployments/{name}/split", json={"percent": percent}
                    )
                ok, label = response.is_success, str(response.status_code)
                detail = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                ok, label, detail = False, type(exc).__name__, f"{type(exc).__name__}: {exc}"
            elapsed = (time.perf_counter_ns() - started) / 1e6
            if not record:
                counts["warmup_ok"] += ok
                return
            latencies.append(elapsed)
            statuses[label] += 1
            if not ok:
                counts["errors"] += 1
                if len(samples) < ERROR_SAMPLES:
                    samples.append(f"{operation} {name}: {detail}")

        async def loop(until: float, *, record: bool) -> None:
            while time.monotonic() < until:
                await one(record=record)

        warm_until = time.monotonic() + config["warmup"]
        await asyncio.gather(*(loop(warm_until, record=False) for _ in range(concurrency)))
        sessions = await postgres_sessions(config["pg_dsn"])
        mark = cpu_mark(config["server_pid"])
        started = time.perf_counter()
        until = time.monotonic() + config["seconds"]
        await asyncio.gather(*(loop(until, record=True) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = cpu_since(config["server_pid"], mark)
        if config["pg_dsn"] is not None:  # minus the first probe's own session
            sessions = await postgres_sessions(config["pg_dsn"]) - sessions - 1

    return {
        "latencies_ms": latencies,
        "errors": counts["errors"],
        "warmup_ok": counts["warmup_ok"],
        "seconds": seconds,
        "statuses": dict(statuses),
        "error_samples": samples,
        "cpu_s": cpu,
        "pg_sessions": sessions if config["pg_dsn"] is not None else 0,
    }


def worker() -> int:
    """The hidden ``--worker`` mode: a JSON config on stdin, a JSON result on stdout."""
    config = json.loads(sys.stdin.read())
    result = asyncio.run(generate_load(config))
    json.dump(result, sys.stdout)
    return 0


def run_load(
    backend: Backend, operation: str, args: argparse.Namespace, *, seed: int
) -> dict[str, Any]:
    """One measurement: spawn the load generator, wait for it, return what it saw."""
    config = {
        "url": backend.url,
        "token": backend.token,  # on stdin, not on the command line
        "names": backend.names,
        "operation": operation,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "seed": seed,
        "server_pid": backend.pid,
        "pg_dsn": args.pg_dsn if backend.label == "postgresql" else None,
    }
    done = subprocess.run(  # noqa: S603 - this interpreter running this file
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=args.warmup + args.seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the load generator failed ({done.returncode}) on {backend.label} {operation}:\n"
            f"{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env() -> dict[str, str]:
    """The environment without CANARYGUARD_* settings, so the server runs on its defaults."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CANARYGUARD_")}


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=url, timeout=2, trust_env=False) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"canaryguard serve exited with {process.returncode} before it was ready:\n"
                    f"{log_tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/readyz").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"canaryguard serve was not ready in time:\n{log_tail(log)}")
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGINT (a graceful uvicorn shutdown), then SIGTERM, then SIGKILL; wait for each."""
    started = time.perf_counter()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        process.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT_S)
    return process.wait(), time.perf_counter() - started


@contextlib.contextmanager
def running_server(
    label: str, data_dir: Path, db_url: str | None, notes: list[str], *, log_name: str = "server"
) -> Iterator[tuple[str, str, int]]:
    """``canaryguard serve`` as a child process; yields its URL, admin token and pid."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = data_dir / f"{log_name}.log"
    command = [str(CANARYGUARD), "serve", "--data-dir", str(data_dir), "--host", HOST]
    command += ["--port", str(port)]
    if db_url is not None:
        command += ["--db", db_url]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the project's own entry point
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(),
        )
    try:
        wait_ready(url, process, log)
        token = (data_dir / "admin-token").read_text().strip()
        yield url, token, process.pid
    finally:
        code, took = stop(process)
        notes.append(f"{label}: the server stopped with exit code {code} in {took:.1f} s")
        if code != 0:
            notes.append(f"{label}: the end of its log:\n{log_tail(log)}")


@contextlib.contextmanager
def postgres_schema(dsn: str) -> Iterator[str]:
    """A fresh schema, dropped at the end; yields the server's --db URL for it."""
    schema = f"bench_api_{secrets.token_hex(5)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        base = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# -- seeding and checks (through the REST API) ---------------------------------------------


def api(client: httpx.Client, method: str, path: str, *, expect: int, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    if response.status_code != expect:
        raise RuntimeError(
            f"{method} {path}: {response.status_code} (expected {expect}): {response.text[:500]}"
        )
    return response.json()


def example_document(filename: str) -> dict[str, Any]:
    text = (resources.files("canaryguard") / "examples" / filename).read_text()
    return dict(parse_document(text, format_for_filename(filename), source=filename))


def seed(client: httpx.Client, *, deployments: int) -> tuple[list[str], dict[str, int]]:
    """Two policy versions, the deployments on the first, a 10 % canary of the second on each."""
    refs = []
    for filename in ("security-v1.yaml", "security-v2.toml"):
        version = api(
            client,
            "POST",
            f"/api/v1/policies/{POLICY}/versions",
            expect=201,
            json={"document": example_document(filename)},
        )
        refs.append(f"{version['name']}@{version['version']}")
    names = [f"svc-{i:04d}/security" for i in range(deployments)]
    revisions = {}
    for name in names:
        api(
            client,
            "POST",
            "/api/v1/deployments",
            expect=201,
            json={"name": name, "stable": refs[0]},
        )
        started = api(
            client,
            "POST",
            f"/api/v1/deployments/{name}/canary",
            expect=200,
            json={"policy": refs[1], "percent": CANARY_PERCENT},
        )
        revisions[name] = started["revision"]
    return names, revisions


def check(backend: Backend) -> str:
    """Every successful split moved one revision on; the states held; the audit chain verifies."""
    splits = backend.results[SPLIT_OP]
    with httpx.Client(
        base_url=backend.url,
        headers={"Authorization": f"Bearer {backend.token}"},
        timeout=30,
        trust_env=False,
    ) as client:
        grown = 0
        for name in backend.names:
            deployment = api(client, "GET", f"/api/v1/deployments/{name}", expect=200)
            if deployment["state"] != "canary_active":
                raise RuntimeError(f"{name} ended in state {deployment['state']}")
            grown += deployment["revision"] - backend.seeded_revisions[name]
        expected = splits.ok + splits.warmup_ok
        if grown != expected:
            raise RuntimeError(
                f"{backend.label}: revisions grew by {grown}, but {expected} splits succeeded"
            )
        verdict = api(client, "GET", "/api/v1/audit/verify", expect=200)
    if not verdict["ok"]:
        raise RuntimeError(f"audit chain broken on {backend.label}: {verdict}")
    return (
        f"{backend.label}: revisions grew by exactly the {grown} successful splits "
        f"(warm-up included); audit chain of {verdict['checked']} records ok"
    )


# -- measuring -----------------------------------------------------------------------------


def measure(backends: Sequence[Backend], args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    pairs = [(backend, op) for backend in backends for op in OPERATIONS]
    for round_ in range(args.rounds):
        rng.shuffle(pairs)
        for backend, op in pairs:
            result = run_load(backend, op, args, seed=rng.randrange(2**32))
            into = backend.results[op]
            into.latencies_ms.extend(result["latencies_ms"])
            into.errors += result["errors"]
            into.warmup_ok += result["warmup_ok"]
            into.seconds += result["seconds"]
            into.statuses.update(result["statuses"])
            into.cpu_s.update(result["cpu_s"])
            into.pg_sessions += result["pg_sessions"]
            room = ERROR_SAMPLES - len(into.error_samples)
            into.error_samples.extend(result["error_samples"][:room])
            rate = len(result["latencies_ms"]) / result["seconds"]
            print(
                f"  round {round_ + 1}/{args.rounds}: {backend.label} {op}: "
                f"{len(result['latencies_ms'])} requests, {rate:.0f} req/s, "
                f"{result['errors']} errors",
                flush=True,
            )


# -- reporting -----------------------------------------------------------------------------


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def table(backends: Sequence[Backend], concurrency: int) -> str:
    header = [
        "backend",
        "operation",
        "concurrency",
        "seconds",
        "requests",
        "req/s",
        "median ms",
        "p99 ms",
        "errors",
    ]
    rows = [header]
    for op in OPERATIONS:
        for backend in backends:
            result = backend.results[op]
            if not result.latencies_ms:
                continue
            rows.append(
                [
                    backend.label,
                    op,
                    str(concurrency),
                    f"{result.seconds:.1f}",
                    str(result.requests),
                    f"{result.requests / result.seconds:.0f}",
                    f"{statistics.median(result.latencies_ms):.2f}",
                    f"{p99(result.latencies_ms):.2f}",
                    str(result.errors),
                ]
            )
    return markdown_table(rows, numeric=set(range(2, len(header))))


def cpu_note(backend: Backend, op: str) -> str:
    result = backend.results[op]
    busy = ", ".join(
        f"{who} {result.cpu_s[who] / result.seconds:.2f}"
        for who in ("server", "load generator", "postgres")
    )
    per_request = result.cpu_s["server"] / max(result.requests, 1) * 1e3
    note = f"{backend.label} {op}: cores busy: {busy}; server CPU per request {per_request:.2f} ms"
    if backend.label == "postgresql":
        note += f"; {result.pg_sessions} database sessions opened and closed"
    return note


# -- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    backends: list[Backend] = []
    lifecycle: list[str] = []
    with contextlib.ExitStack() as stack:
        for label in labels:
            db_url = None
            if label == "postgresql":
                db_url = stack.enter_context(postgres_schema(args.pg_dsn))
            data_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix=f"canaryguard-api-{label}-"))
            )
            url, token, pid = stack.enter_context(
                running_server(label, data_dir, db_url, lifecycle)
            )
            print(f"{label}: serving on {url} (pid {pid}); seeding through the API", flush=True)
            started = time.perf_counter()
            with httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
                trust_env=False,
            ) as client:
                names, revisions = seed(client, deployments=args.deployments)
            took = time.perf_counter() - started
            print(
                f"{label}: {args.deployments} deployments with a running canary, "
                f"seeded in {took:.1f} s",
                flush=True,
            )
            backends.append(Backend(label, url, token, pid, names, revisions, took))

        print(
            f"measuring: {args.rounds} round(s) of every backend and operation in a shuffled "
            f"order, each {args.warmup:g} s warm-up + {args.seconds:g} s at concurrency "
            f"{args.concurrency}",
            flush=True,
        )
        measure(backends, args)
        checks = [check(backend) for backend in backends]
    # the servers are stopped and the schema dropped here

    print()
    print(
        f"Servers: `canaryguard serve` (uvicorn, one process) with {args.deployments} "
        f"deployments, each with a running {CANARY_PERCENT} % canary; load from a separate "
        f"httpx process with {args.concurrency} requests in flight over keep-alive connections "
        f"on loopback; {args.rounds} x {args.seconds:g} s per row after {args.warmup:g} s of "
        f"warm-up; seed {args.seed}."
    )
    print()
    print(table(backends, args.concurrency))
    print()
    print(
        f"Machine: {os.cpu_count()} shared cores; the server, the load generator and the "
        "database all share them, so these numbers are a lower bound of what the server alone "
        "would do."
    )
    print("CPU during the measured seconds (cores busy; postgres counts every postgres process):")
    for op in OPERATIONS:
        for backend in backends:
            if backend.results[op].latencies_ms:
                print(f"  {cpu_note(backend, op)}")
    for backend in backends:
        for op in OPERATIONS:
            result = backend.results[op]
            if result.errors:
                statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result.statuses.items()))
                print(f"{backend.label} {op}: ERRORS; responses by status: {statuses}")
                for sample in result.error_samples:
                    print(f"  {sample}")
    for note in [*checks, *lifecycle]:
        print(note)
    return 0 if all(not r.errors for b in backends for r in b.results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) == ["--worker"]:
        return worker()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=positive_seconds, default=10.0, help="per measurement")
    parser.add_argument("--concurrency", type=positive, default=16, help="requests in flight")
    parser.add_argument("--deployments", type=positive, default=100)
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first")
    parser.add_argument("--rounds", type=positive, default=1, help="of every backend and op")
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the choices")
    args = parser.parse_args(argv)
    return run_interruptibly(run, args)


if __name__ == "__main__":
    sys.exit(main())
