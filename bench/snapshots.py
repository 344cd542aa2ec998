"""Benchmark: encrypted snapshot creation and immediate rollback on a realistically full store.

Run from the repository root::

    .venv/bin/python bench/snapshots.py                  # both backends, full size
    .venv/bin/python bench/snapshots.py --backend sqlite --deployments 100 --samples 100

Each backend gets a store of ``--deployments`` deployments that already hold ``--snapshots``
encrypted snapshots each (SQLite: a temporary file; PostgreSQL: a fresh schema, dropped at the
end). Then, with both stores open, rounds of operations run in a shuffled order per round, so a
noisy moment hits every backend and operation alike:

- ``snapshot create``: ``app.snapshots.create`` end to end on a random deployment (capture,
  AES-256-GCM sealing, retention at the default ``max_snapshots=50``, event, audit, commit);
- ``rollback commit``: ``app.rollbacks.rollback`` of a random deployment whose canary was started
  (with a minute of observations recorded) earlier, outside the timed region.

Only those two calls are timed. The first ``--warmup`` rounds are not recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

from canaryguard.adapters.bus import InProcessBus
from canaryguard.adapters.clock import SystemClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import open_store
from canaryguard.domain.assignment import Variant
from canaryguard.domain.events import SnapshotCreated
from canaryguard.domain.models import Observation, RollbackStatus, SnapshotKind
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.unit import Ports, new_id, unit_of_work

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.options import positive
from bench.tables import markdown_table

ACTOR = "bench"
POLICY = "security"
PG_DSN = os.environ.get("CANARYGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

SNAPSHOT_OP = "snapshot create"
ROLLBACK_OP = "rollback commit"
GOALS_MS = {SNAPSHOT_OP: 10.0, ROLLBACK_OP: 20.0}
ORIGINAL_TARGETS = "snapshot creation < 5 s, rollback execution < 2 min"

MAX_SNAPSHOTS = 50  # RollbackConfig's default, left alone so retention runs
SEED_BATCH = 100  # deployments per seeding transaction
CANARY_PERCENT = 10
OBSERVED_SECONDS = 60  # per-second observations per variant recorded for each canary


@dataclass
class Backend:
    """One open store under test, with what was measured on it."""

    label: str
    app: CanaryGuard
    names: list[str]
    canary_policy: str
    seed_seconds: float
    pending: str = ""  # a deployment whose canary is running, ready to be rolled back
    timings: dict[str, list[float]] = field(
        default_factory=lambda: {SNAPSHOT_OP: [], ROLLBACK_OP: []}
    )
    in_tx_rollback_ms: list[float] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


# -- stores --------------------------------------------------------------------------------


async def open_app(url: str) -> CanaryGuard:
    store = await open_store(url)
    ports = Ports(
        store=store, bus=InProcessBus(), clock=SystemClock(), keys=AesGcmKeyRing.generate()
    )
    return CanaryGuard(ports)


@contextlib.asynccontextmanager
async def sqlite_url() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="canaryguard-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextlib.asynccontextmanager
async def postgres_url(dsn: str) -> AsyncIterator[str]:
    schema = f"bench_{secrets.token_hex(5)}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        base = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def postgres_vacuum_analyze(dsn: str, url: str) -> None:
    """What autovacuum would have done by now on a store this size, done once, up front."""
    schema = url.rsplit("%3D", 1)[1]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for table in ("deployments", "snapshots", "event_log", "audit_log", "policy_versions"):
            await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))


# -- seeding -------------------------------------------------------------------------------


async def seed(app: CanaryGuard, *, deployments: int, snapshots: int) -> tuple[list[str], str]:
    """Publish two policy versions, create the deployments, give each ``snapshots`` snapshots.

    The deployments are created through the API. Per deployment, one snapshot is taken with the
    real capture path; the other ``snapshots - 1`` are copies of its body (new ids, later times),
    each sealed (encrypted) on its own and inserted, with its ``SnapshotCreated`` event, in a
    few large write transactions. Returns the deployment names and the canary policy ref.
    """
    examples = resources.files("canaryguard") / "examples"
    schema = json.loads((examples / "security-policy.schema.json").read_text())
    await app.policies.set_schema(POLICY, schema, actor=ACTOR)
    with resources.as_file(examples / "security-v1.yaml") as path:
        v1 = await app.policies.publish_file(path, name=POLICY, actor=ACTOR)
    with resources.as_file(examples / "security-v2.toml") as path:
        v2 = await app.policies.publish_file(path, name=POLICY, actor=ACTOR)

    names = [f"svc-{i:04d}/security" for i in range(deployments)]
    for name in names:
        await app.deployments.create(name, stable=str(v1.ref), actor=ACTOR)

    for start in range(0, len(names), SEED_BATCH):
        async with unit_of_work(app.ports, ACTOR) as unit:
            for name in names[start : start + SEED_BATCH]:
                current = await unit.tx.deployments.get(name)
                if current is None:
                    raise RuntimeError(f"{name} vanished while seeding")
                first = await app.snapshots.capture(
                    unit, current, kind=SnapshotKind.MANUAL, note="seeded"
                )
                for seq in range(2, snapshots + 1):
                    copy = first.model_copy(
                        update={
                            "id": new_id("snap"),
                            "created_at": first.created_at + timedelta(microseconds=seq),
                            "note": f"seeded copy {seq}",
                        }
                    )
                    await unit.tx.snapshots.insert(app.snapshots.seal(copy, seq=seq, pinned=False))
                    await unit.emit(
                        SnapshotCreated(snapshot_id=copy.id, kind=copy.kind, pinned=False),
                        deployment=name,
                        revision=current.revision,
                    )
    return names, str(v2.ref)


# -- the operations ------------------------------------------------------------------------


async def prepare_canary(backend: Backend, rng: random.Random) -> None:
    """Untimed: start a canary on a random deployment and record a minute of its traffic."""
    app = backend.app
    name = rng.choice(backend.names)
    await app.deployments.start_canary(
        name, policy=backend.canary_policy, percent=CANARY_PERCENT, actor=ACTOR
    )
    now = int(app.ports.clock.now().timestamp())
    minute = [
        Observation(
            deployment=name,
            variant=variant,
            second=now - OBSERVED_SECONDS + second,
            requests=requests,
            errors=errors,
            latency_sum_ms=requests * mean_ms,
            latency_max_ms=max_ms,
        )
        for second in range(OBSERVED_SECONDS)
        for variant, requests, errors, mean_ms, max_ms in (
            (Variant.STABLE, 900, 9, 42.0, 180.0),
            (Variant.CANARY, 100, 5, 55.0, 900.0),
        )
    ]
    await app.observations.ingest(minute)
    backend.pending = name
    backend.touched.add(name)


async def time_snapshot(backend: Backend, rng: random.Random) -> float:
    name = rng.choice(backend.names)
    backend.touched.add(name)
    started = time.perf_counter_ns()
    await backend.app.snapshots.create(name, actor=ACTOR, note="benchmark snapshot")
    return (time.perf_counter_ns() - started) / 1e6


async def time_rollback(backend: Backend, rng: random.Random) -> float:
    name = backend.pending
    started = time.perf_counter_ns()
    record = await backend.app.rollbacks.rollback(
        name, reason="benchmark: canary errors 5.0% vs stable 1.0%", actor=ACTOR
    )
    elapsed = (time.perf_counter_ns() - started) / 1e6
    if record.status is not RollbackStatus.COMPLETED:
        raise RuntimeError(f"rollback {record.id} of {name} ended {record.status}")
    backend.in_tx_rollback_ms.append(record.duration_ms or 0.0)
    # the next canary starts now, so other operations run before it is rolled back
    await prepare_canary(backend, rng)
    return elapsed


async def measure(backends: Sequence[Backend], *, samples: int, warmup: int, seed: int) -> None:
    rng = random.Random(seed)
    for backend in backends:
        await prepare_canary(backend, rng)
    gc.collect()
    pairs = [(backend, op) for backend in backends for op in (SNAPSHOT_OP, ROLLBACK_OP)]
    total = warmup + samples
    for round_ in range(total):
        rng.shuffle(pairs)
        for backend, op in pairs:
            if op == SNAPSHOT_OP:
                elapsed = await time_snapshot(backend, rng)
            else:
                elapsed = await time_rollback(backend, rng)
            if round_ >= warmup:
                backend.timings[op].append(elapsed)
        if (round_ + 1) % 100 == 0 or round_ + 1 == total:
            print(f"  round {round_ + 1}/{total}", flush=True)
    for backend in backends:
        del backend.in_tx_rollback_ms[:warmup]


async def check(backend: Backend, *, snapshots: int) -> str:
    """After the run: retention held every deployment at its limit; the audit chain holds."""
    app = backend.app
    total = 0
    for name in backend.names:
        held = len(await app.snapshots.list(name))
        total += held
        if name in backend.touched:
            if held > MAX_SNAPSHOTS:
                raise RuntimeError(f"{name} holds {held} snapshots; retention keeps 50")
        elif held != snapshots:
            raise RuntimeError(f"{name} holds {held} snapshots, seeded with {snapshots}")
    infos = await app.snapshots.list(backend.names[0])
    await app.snapshots.get(infos[0].id)  # an old seeded snapshot still decrypts
    verdict = await app.audit.verify()
    if not verdict.ok:
        raise RuntimeError(f"audit chain broken on {backend.label}: {verdict.problem}")
    return f"{total} snapshots held after the run, audit chain of {verdict.checked} records ok"


# -- reporting -----------------------------------------------------------------------------


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def table(backends: Sequence[Backend]) -> str:
    header = ["backend", "operation", "samples", "median ms", "p99 ms", "goal (p99)", "p99/goal"]
    rows = [header]
    for op in (SNAPSHOT_OP, ROLLBACK_OP):
        for backend in backends:
            values = backend.timings[op]
            if not values:
                continue
            goal = GOALS_MS[op]
            high = p99(values)
            verdict = "ok" if high < goal else "over"
            rows.append(
                [
                    backend.label,
                    op,
                    str(len(values)),
                    f"{statistics.median(values):.2f}",
                    f"{high:.2f}",
                    f"< {goal:g} ms",
                    f"{high / goal:.2f} ({verdict})",
                ]
            )
    return markdown_table(rows, numeric={2, 3, 4, 6})


async def seal_cost_us(backend: Backend, *, repeat: int = 2000) -> tuple[float, float]:
    """Microseconds to seal (serialise + encrypt) and to unseal one snapshot body, for context."""
    snapshots = backend.app.snapshots
    infos = await snapshots.list(backend.names[0])
    body = await snapshots.get(infos[-1].id)
    started = time.perf_counter_ns()
    for _ in range(repeat):
        sealed = snapshots.seal(body, seq=1, pinned=False)
    sealing = (time.perf_counter_ns() - started) / repeat / 1e3
    started = time.perf_counter_ns()
    for _ in range(repeat):
        snapshots.unseal(sealed)
    unsealing = (time.perf_counter_ns() - started) / repeat / 1e3
    return sealing, unsealing


# -- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    backends: list[Backend] = []
    async with contextlib.AsyncExitStack() as stack:
        for label in labels:
            if label == "sqlite":
                url = await stack.enter_async_context(sqlite_url())
            else:
                url = await stack.enter_async_context(postgres_url(args.pg_dsn))
            app = await open_app(url)
            stack.push_async_callback(app.close)
            print(
                f"{label}: seeding {args.deployments} deployments x {args.snapshots} snapshots",
                flush=True,
            )
            started = time.perf_counter()
            names, canary_policy = await seed(
                app, deployments=args.deployments, snapshots=args.snapshots
            )
            if label == "postgresql":
                await postgres_vacuum_analyze(args.pg_dsn, url)
            took = time.perf_counter() - started
            print(f"{label}: seeded in {took:.1f} s", flush=True)
            backends.append(Backend(label, app, names, canary_policy, took))

        print(
            f"measuring: {args.warmup} warm-up + {args.samples} rounds, each one snapshot and "
            f"one rollback per backend, in a shuffled order",
            flush=True,
        )
        await measure(backends, samples=args.samples, warmup=args.warmup, seed=args.seed)
        notes = [f"{b.label}: {await check(b, snapshots=args.snapshots)}" for b in backends]
        sealing, unsealing = await seal_cost_us(backends[0])

    print()
    print(
        f"Store: {args.deployments} deployments x {args.snapshots} encrypted snapshots "
        f"(max_snapshots 50, so retention runs on every snapshot); {args.samples} samples per "
        f"row after {args.warmup} warm-up rounds; seed {args.seed}."
    )
    print()
    print(table(backends))
    print()
    print(
        "Goals: snapshot creation p99 < 10 ms, rollback commit p99 < 20 ms. "
        f"The original system's target, for context: {ORIGINAL_TARGETS}."
    )
    for backend in backends:
        in_tx = statistics.median(backend.in_tx_rollback_ms) if backend.in_tx_rollback_ms else 0
        print(
            f"{backend.label}: seeding took {backend.seed_seconds:.1f} s; median rollback "
            f"duration_ms as recorded inside the transaction (before the commit): {in_tx:.2f}"
        )
    for note in notes:
        print(note)
    print(
        f"In-process cost of one snapshot body: seal (JSON + AES-256-GCM) {sealing:.0f} us, "
        f"unseal {unsealing:.0f} us."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deployments", type=positive, default=1000)
    parser.add_argument("--snapshots", type=positive, default=50, help="per deployment")
    parser.add_argument("--samples", type=positive, default=500, help="per backend and operation")
    parser.add_argument("--warmup", type=int, default=20, help="unrecorded rounds first")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the choices")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
