"""Benchmark: the monitor's per-second read of the deployments it judges, among many idle ones.

Run from the repository root::

    .venv/bin/python bench/idle_reads.py                     # 10,000 idle + 100 canaries, both
    .venv/bin/python bench/idle_reads.py --backend sqlite --idle 1000

Every tick, the monitor reads the deployments it judges (``validating``, ``canary_active``,
``scaling``). A fleet has far more
deployments at rest (``idle``, ``fully_deployed``, ``rolled_back``) than canaries. The store has
``--idle`` deployments at rest and ``--canaries`` with a canary; each round measures, in a
shuffled order, one read transaction (wall time, JSON decoding included):

- ``every deployment``: ``deployments.all()``, decoding every row, then keeping the judged ones
  (what the monitor did before it selected by state);
- ``judged states``: ``deployments.all(JUDGED_STATES)``, what the monitor does now;
- ``revisions only``: ``deployments.revisions()``, what the Prometheus puller reads each second
  once it has decoded every deployment (it decodes again only the rows whose revision moved).

The table gives the median over ``--rounds`` rounds and the ratio to ``judged states``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from canaryguard.domain import rollout
from canaryguard.domain.assignment import Criterion
from canaryguard.domain.models import PolicyRef
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.monitor import JUDGED_STATES

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.options import positive
from bench.snapshots import PG_DSN, open_app, postgres_url, sqlite_url
from bench.tables import markdown_table

AT = datetime(2026, 11, 27, tzinfo=UTC)
STABLE = PolicyRef(name="sec", version="1", content_hash="sha256:" + "1" * 64)
CANARY = PolicyRef(name="sec", version="2", content_hash="sha256:" + "2" * 64)


async def fill(app: CanaryGuard, idle: int, canaries: int) -> None:
    """``idle`` deployments at rest and ``canaries`` with a 10 % canary, written directly."""
    async with app.ports.store.write() as tx:
        for k in range(idle + canaries):
            deployment = rollout.create_deployment(
                f"fleet/service-{k:05d}", stable=STABLE, salt=f"{k:016x}", now=AT
            )
            if k >= idle:
                deployment = rollout.start_canary(
                    deployment,
                    canary=CANARY,
                    canary_basis_points=1_000,
                    criterion=Criterion.USER_ID,
                    attribute=None,
                    canary_groups=(),
                    stable_groups=(),
                    baseline_snapshot_id=f"snap-{k}",
                    now=AT,
                )
            await tx.deployments.insert(deployment)


async def every_deployment(app: CanaryGuard) -> int:
    async with app.ports.store.read() as tx:
        return sum(d.state in JUDGED_STATES for d in await tx.deployments.all())


async def judged(app: CanaryGuard) -> int:
    async with app.ports.store.read() as tx:
        return len(await tx.deployments.all(JUDGED_STATES))


async def revisions(app: CanaryGuard) -> int:
    async with app.ports.store.read() as tx:
        # a steady second: nothing moved, nothing decoded (a canary's start raised its revision)
        return sum(revision > 1 for revision in (await tx.deployments.revisions()).values())


READS: dict[str, Callable[[CanaryGuard], Awaitable[int]]] = {
    "every deployment": every_deployment,
    "judged states": judged,
    "revisions only": revisions,
}


async def run(args: argparse.Namespace) -> int:
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    times: dict[tuple[str, str], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        opened: dict[str, CanaryGuard] = {}
        for label in labels:
            context = sqlite_url() if label == "sqlite" else postgres_url(args.pg_dsn)
            url = await stack.enter_async_context(context)
            opened[label] = app = await open_app(url)
            stack.push_async_callback(app.close)
            await fill(app, args.idle, args.canaries)
        rng = random.Random(args.seed)
        for _ in range(args.rounds):
            steps = [(label, name) for label in opened for name in READS]
            rng.shuffle(steps)
            for label, name in steps:
                started = time.perf_counter()
                found = await READS[name](opened[label])
                times.setdefault((label, name), []).append((time.perf_counter() - started) * 1000)
                if found != args.canaries:
                    raise RuntimeError(f"{name} on {label} found {found}, not {args.canaries}")
    rows = [["backend", "read", "median ms", "x judged states"]]
    for label in labels:
        base = statistics.median(times[(label, "judged states")])
        for name in READS:
            median = statistics.median(times[(label, name)])
            rows.append([label, name, f"{median:.2f}", f"{median / base:.1f}"])
    print()
    print(
        f"{args.idle} deployments at rest, {args.canaries} with a canary; {args.rounds} rounds, "
        f"reads shuffled per round; seed {args.seed}. Wall time of one read transaction."
    )
    print()
    print(markdown_table(rows, numeric={2, 3}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--idle", type=positive, default=10_000)
    parser.add_argument("--canaries", type=positive, default=100)
    parser.add_argument("--rounds", type=positive, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--backend", choices=["both", "sqlite", "postgresql"], default="both", help="store(s)"
    )
    parser.add_argument("--pg-dsn", default=PG_DSN)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
