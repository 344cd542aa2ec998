"""Benchmark: what saving every running canary's detector costs, next to the tick it protects.

Run from the repository root::

    .venv/bin/python bench/checkpoints.py                    # 1,000 canaries, both backends
    .venv/bin/python bench/checkpoints.py --backend sqlite --canaries 200

The monitor saves each run's detector every ``CHECKPOINT_SECONDS`` (30) judged seconds
(``Detector.checkpoint`` as JSON, table ``detector_checkpoints``), so a restarted process or a
new leader resumes the evidence. ``--canaries`` detectors are fed ``--warmup`` seconds of their
own simulated null traffic (``bench/detection.py``'s simulator: 1,000 req/s, 10 % canary, 1 %
errors, latency histograms), then each round measures, in a shuffled order:

- ``tick``: one second more into every detector (CPU, ``time.process_time``), the work the
  checkpoint is an overhead on;
- ``checkpoint``: ``Detector.checkpoint`` and ``json.dumps`` of every detector (CPU);
- ``restore``: ``json.loads`` and ``Detector.from_checkpoint`` of every one (CPU), what a
  takeover does once per run;
- ``save <backend>``: one write transaction saving every detector, as the monitor does (wall
  time, JSON included), on SQLite (a temporary file) and PostgreSQL (a fresh schema);
- ``load <backend>``: one read transaction getting every run's checkpoint back (wall time).

The table gives the median over ``--rounds`` rounds, the ratio to ``tick``, and the share of
each tick it costs when spread over the ``CHECKPOINT_SECONDS`` between saves. The default
run takes about a minute on two busy cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from canaryguard.domain.detector import Detector, DetectorConfig
from canaryguard.domain.judge import RunCheckpoint
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.monitor import CHECKPOINT_SECONDS

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.detection import null_feeds
from bench.options import positive
from bench.snapshots import PG_DSN, open_app, postgres_url, sqlite_url
from bench.tables import markdown_table

AT = datetime(2026, 11, 27, tzinfo=UTC)


def cpu_ms(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.process_time()
    work()
    return (time.process_time() - started) * 1000


async def wall_ms(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    result = work()
    if asyncio.iscoroutine(result):
        await result
    return (time.perf_counter() - started) * 1000


async def save(app: CanaryGuard, detectors: Sequence[Detector], second: int) -> None:
    async with app.ports.store.write(exclusive=False) as tx:
        await tx.checkpoints.save(
            [
                RunCheckpoint(f"run-{k}", f"bench/{k}", second, d.checkpoint(), AT)
                for k, d in enumerate(detectors)
            ]
        )


async def load(app: CanaryGuard, count: int) -> None:
    async with app.ports.store.read() as tx:
        for k in range(count):
            if await tx.checkpoints.get(f"run-{k}") is None:
                raise RuntimeError(f"run-{k} has no checkpoint")


def saving(app: CanaryGuard, detectors: Sequence[Detector], second: int) -> Callable[[], object]:
    return lambda: save(app, detectors, second)


def loading(app: CanaryGuard, count: int) -> Callable[[], object]:
    return lambda: load(app, count)


async def run(args: argparse.Namespace) -> int:
    seconds = args.warmup + args.rounds
    print(f"simulating {args.canaries} canaries x {seconds} s", flush=True)
    feeds = null_feeds(args.canaries, seconds, args.seed)
    detectors = [Detector(DetectorConfig(), started_at=0.0) for _ in feeds]
    for second in range(args.warmup):
        for detector, feed in zip(detectors, feeds, strict=True):
            detector.update(second, *feed[second])
    texts = [json.dumps(d.checkpoint(), separators=(",", ":")) for d in detectors]
    size = statistics.mean(len(text) for text in texts)
    labels = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    times: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        apps = {}
        for label in labels:
            context = sqlite_url() if label == "sqlite" else postgres_url(args.pg_dsn)
            apps[label] = await stack.enter_async_context(context)
        opened = {label: await open_app(url) for label, url in apps.items()}
        for app in opened.values():
            stack.push_async_callback(app.close)
            await save(app, detectors, args.warmup)  # the rows exist: each round replaces them
        rng = random.Random(args.seed)
        for round_ in range(args.rounds):
            second = args.warmup + round_

            def tick(second: int = second) -> None:
                for detector, feed in zip(detectors, feeds, strict=True):
                    detector.update(second, *feed[second])

            steps: list[tuple[str, Callable[[], object], bool]] = [
                ("tick", tick, True),
                (
                    "checkpoint",
                    lambda: [json.dumps(d.checkpoint(), separators=(",", ":")) for d in detectors],
                    True,
                ),
                (
                    "restore",
                    lambda: [Detector.from_checkpoint(json.loads(text)) for text in texts],
                    True,
                ),
            ]
            for label, app in opened.items():
                steps.append((f"save {label}", saving(app, detectors, second + 1), False))
                steps.append((f"load {label}", loading(app, len(detectors)), False))
            rng.shuffle(steps)
            for name, work, on_cpu in steps:
                spent = cpu_ms(work) if on_cpu else await wall_ms(work)
                times.setdefault(name, []).append(spent)

    tick_ms = statistics.median(times["tick"])
    rows = [["step", "median ms", "x tick", f"per tick over {CHECKPOINT_SECONDS} s"]]
    order = ["tick", "checkpoint", "restore"] + [
        f"{step} {label}" for label in labels for step in ("save", "load")
    ]
    for name in order:
        median = statistics.median(times[name])
        share = (
            ""
            if name in ("tick", "restore") or name.startswith("load")
            else (f"{median / CHECKPOINT_SECONDS / tick_ms:.1%} of a tick")
        )
        rows.append([name, f"{median:.1f}", f"{median / tick_ms:.2f}", share])
    print()
    print(
        f"{args.canaries} canaries after {args.warmup} s of null traffic; {args.rounds} rounds, "
        f"steps shuffled per round; seed {args.seed}. CPU rows: process time; save/load: wall "
        f"time. One checkpoint: {size / 1024:.1f} KiB of JSON."
    )
    print()
    print(markdown_table(rows, numeric={1, 2}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--canaries", type=positive, default=1000)
    parser.add_argument("--warmup", type=positive, default=120, help="seconds fed before")
    parser.add_argument("--rounds", type=positive, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-dsn", default=PG_DSN, help="server for the PostgreSQL schema")
    parser.add_argument("--seed", type=int, default=1)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
