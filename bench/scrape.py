"""Benchmark: canaryguard's detector fed through Prometheus scrapes instead of one-second reports.

How much later a bad canary is caught, and whether good canaries are rolled back more often,
when each side's outcomes arrive in lumps every scrape interval, on the same seeded streams as
``bench/detection.py``.

Run from the repository root::

    .venv/bin/python bench/scrape.py                  # 1, 5, 15 and 30 s, full size
    .venv/bin/python bench/scrape.py --quick          # 100 / 250 runs
    .venv/bin/python bench/scrape.py --intervals 1 15 --scenarios base null --runs 100 \\
        --null-runs 500 --json /tmp/scrape.json

Defaults: ``--runs 500`` per regression scenario (10 minutes each), ``--null-runs 1500`` per
no-regression scenario (30 minutes each), ``--workers 2``, ``--seed 1``, ``--history 600``,
``--intervals 1 5 15 30``, ``--scenarios base latency-10 null null-incident`` (any of
detection.py's): about 7 minutes on 2 cores (``--quick``: 1 to 2). Most of it is the 1 s
column's null runs, 1,800 seconds of canaryguard each; the longer intervals' empty seconds cost
little.

**Streams.** Every run is ``bench/detection.py``'s: the same scenarios (``base``: errors x2,
``latency-10``: latency +10 %, ``null``: no regression, ``null-incident``: errors x5 on both
sides for the middle 2 minutes), the same seeded generators (keys: the scenario's name, and
``NAME/history`` and ``NAME/swings`` for stable's 10 minutes of history and the 50 minutes
before them from which the dispersion block is chosen), so the 1 s column is detection.py's
``canaryguard`` row on its first runs. After the run's stream is drawn, one more draw from the
run's own generator (so nothing drawn before changes) places the scrape grid: a uniform ``u``,
and for an interval of ``S`` seconds, scrapes at the seconds ``t`` with ``t = floor(u S)``
modulo ``S`` (the canary starts at second 0).

**Lumping**, as ``domain.counters`` reads Prometheus: a counter's increase between two scrapes
is counted in the second of the later one. For each side, requests, errors and each latency
bucket are summed over ``(t - S, t]`` and put in second ``t``; every other second is empty
(and fed to the detector as such, as the monitor feeds a second without data). Both sides are
scraped at the same instant, so their lumps land in the same second. Stable's seconds before
the canary are one timeline with the run's on the same grid: the scrape just after the start
holds stable's last seconds before it (no canary there), and the prime (the last
``--history`` seconds) and the hour the block is chosen from are lumped the same way (the
50 minutes before the history have no latency, as in detection.py, so the history's first lump
has only its own seconds' histogram). Seconds after a run's last scrape are not seen. Nothing
is charged for the wait between a scrape and the server's read of it.

**Buckets.** By default the latency buckets stay canaryguard's own (10 % log buckets). With
``--buckets prometheus``, every second's histogram (history and hour included) is first put
through the Prometheus client libraries' default buckets (``le`` 5, 10, 25, 50, 75, 100, 250,
500, 750, 1,000, 2,500, 5,000, 7,500 and 10,000 ms, and ``+Inf``), as an application that keeps
the defaults exposes it: each log bucket's count goes to the Prometheus bucket holding its
geometric middle, and is read back as ``domain.counters.latency_histogram`` reads a Prometheus
histogram (at the log bucket at or above the ``le``; ``+Inf`` just above the largest ``le``).

**Measured**, exactly as detection.py measures canaryguard (``Detector(DetectorConfig())``, the
block chosen per run, a verdict on second ``s`` acted on at ``s + 1`` plus lag): per
regression, the share detected within the 10-minute run, median and p95 time to detect from the
onset (nearest rank over all runs, a miss counting as never) and the median over the 1 s
column's; and, for reference, the 1 s decisions moved to the next scrape (what waiting for the
scrape alone would cost). Per no-regression scenario (30 minutes), the false rollbacks with the
upper end of the exact (Clopper-Pearson) 95 % interval. Also: which test decided, and in how
many runs minute blocks were chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from canaryguard.domain.counters import latency_histogram
from canaryguard.domain.detector import SLOW_BLOCK_SECONDS, Counts
from canaryguard.domain.histogram import GROWTH
from canaryguard.domain.judge import history_span
from canaryguard.domain.models import RollbackConfig

if __package__ in (None, ""):  # run as a script (python bench/x.py): make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.detection import (
    HISTORY_SECONDS,
    SCENARIOS,
    Floats,
    Ints,
    Row,
    Scenario,
    Stream,
    canaryguard,
    history_for,
    rng_for,
    seconds_text,
    simulate,
)
from bench.options import add_simulation_options, positive, write_report
from bench.tables import markdown_table

INTERVALS = (1, 5, 15, 30)
# the Prometheus client libraries' default histogram buckets (prometheus_client's
# DEFAULT_BUCKETS, client_golang's DefBuckets), in milliseconds
PROMETHEUS_DEFAULT_LE_MS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
DEFAULT_SCENARIOS = ("base", "latency-10", "null", "null-incident")
CHUNK_REGRESSION = 50
CHUNK_NULL = 20


def lump(values: Ints, first: int, interval: int, phase: int) -> Ints:
    """``values`` (sides, seconds, ...) over the seconds ``first``, ``first + 1``, ... as scraped
    every ``interval`` seconds at the seconds ``t`` with ``t % interval == phase``: each
    scrape's second holds the sum since the scrape before (the first one: since ``first``),
    every other second zero. Seconds after the last scrape are dropped (scraped later)."""
    if interval == 1:
        return values
    seconds = first + np.arange(values.shape[1])
    scrapes = np.nonzero((seconds - phase) % interval == 0)[0]
    running = np.cumsum(values, axis=1)
    zero = np.zeros_like(running[:, :1])
    running = np.concatenate([zero, running], axis=1)
    since = np.concatenate([[0], scrapes[:-1] + 1])
    out = np.zeros_like(values)
    out[:, scrapes] = running[:, scrapes + 1] - running[:, since]
    return out


def coarsened(histograms: Ints, low: int, edges_ms: Sequence[float]) -> tuple[Ints, int]:
    """``histograms`` (sides, seconds, log buckets from ``low``) as a Prometheus histogram with
    the bucket edges ``edges_ms`` holds them, read back into log buckets the way the server
    reads one: the new histograms and their lowest bucket."""
    width = histograms.shape[2]
    middles = GROWTH ** (low + np.arange(width) + 0.5)
    holding = np.searchsorted(np.asarray(edges_ms, dtype=float), middles)  # le index; len: +Inf
    # each edge read back as the server reads a whole histogram with these edges (``+Inf``
    # just above the largest finite one): one request in that bucket, none in the others
    les = [*edges_ms, math.inf]
    read_at = [min(latency_histogram({other: float(other >= le) for other in les})) for le in les]
    targets = np.asarray([read_at[k] for k in holding])
    new_low = int(targets.min())
    mapping = np.zeros((width, int(targets.max()) - new_low + 1), dtype=np.int64)
    mapping[np.arange(width), targets - new_low] = 1
    return histograms @ mapping, new_low


def padded(histograms: Ints, low: int, new_low: int, width: int) -> Ints:
    """``histograms`` (sides, seconds, buckets from ``low``) on buckets ``new_low`` ..
    ``new_low + width - 1``."""
    out = np.zeros((*histograms.shape[:2], width), dtype=np.int64)
    start = low - new_low
    out[:, :, start : start + histograms.shape[2]] = histograms
    return out


@dataclass(frozen=True, slots=True)
class Timeline:
    """Stable's past and the run on one clock (second 0: the canary's start): requests and
    errors from ``-span``, histograms from ``-history``. Index 0 is stable, 1 the canary."""

    requests: Ints  # (2, span + seconds)
    errors: Ints  # (2, span + seconds)
    histograms: Ints  # (2, history + seconds, width)
    low: int
    span: int
    history: int
    lag: int


def timeline(run: Stream, history: Stream | None, earlier: Stream | None) -> Timeline:
    """One clock for ``earlier`` (the rest of the hour the block is chosen from, errors
    only), ``history`` (stable's last seconds, all traffic on stable) and ``run``."""
    parts = [p for p in (earlier, history) if p is not None]
    span = sum(p.seconds for p in parts)
    requests = np.concatenate([*(p.requests for p in parts), run.requests], axis=1)
    errors = np.concatenate([*(p.errors for p in parts), run.errors], axis=1)
    if history is None:
        return Timeline(requests, errors, run.histograms, run.low, span, 0, run.lag)
    low = min(history.low, run.low)
    high = max(history.low + history.histograms.shape[2], run.low + run.histograms.shape[2])
    histograms = np.concatenate(
        [
            padded(history.histograms, history.low, low, high - low),
            padded(run.histograms, run.low, low, high - low),
        ],
        axis=1,
    )
    return Timeline(requests, errors, histograms, low, span, history.seconds, run.lag)


def scraped(
    line: Timeline, interval: int, phase: int
) -> tuple[Stream, Stream | None, list[Counts] | None]:
    """The run, stable's history (the prime) and the hour for the block choice, as the
    detector gets them through scrapes every ``interval`` seconds at ``phase``."""
    requests = lump(line.requests, -line.span, interval, phase)
    errors = lump(line.errors, -line.span, interval, phase)
    histograms = lump(line.histograms, -line.history, interval, phase)
    span, history = line.span, line.history
    run = Stream(requests[:, span:], errors[:, span:], histograms[:, history:], line.low, line.lag)
    if not history:
        return run, None, None
    prime = Stream(
        requests[:, span - history : span],
        errors[:, span - history : span],
        histograms[:, :history],
        line.low,
        0,
    )
    swings = None
    if span > history:
        before_r, before_e = requests[0, :span].tolist(), errors[0, :span].tolist()
        swings = [Counts(n, e) for n, e in zip(before_r, before_e, strict=True)]
    return run, prime, swings


def next_scrape(time_s: float, scenario: Scenario, lag: int, interval: int, phase: int) -> float:
    """A 1 s decision moved to the first scrape at or after the second it was taken on (what
    waiting for the scrape alone costs); inf when that falls after the run."""
    if not math.isfinite(time_s):
        return math.inf
    second = int(time_s) - 1 - lag + scenario.onset
    second += (phase - second) % interval
    if second > scenario.seconds - 1 - lag:
        return math.inf
    return float(second + 1 + lag - scenario.onset)


@dataclass(frozen=True, slots=True)
class Task:
    scenario: str
    start: int
    stop: int
    seed: int
    intervals: tuple[int, ...]
    history: int = HISTORY_SECONDS
    buckets: str = "own"


@dataclass
class Outcome:
    """Per run and interval: canaryguard's time to detect, the deciding test, the block it
    used, and the 1 s decision moved to that interval's next scrape."""

    times: Floats  # (runs, intervals)
    waited: Floats  # (runs, intervals)
    conditions: list[list[str]]  # [interval][run]
    blocks: Ints  # (runs, intervals)


def run_task(task: Task) -> Outcome:
    scenario = SCENARIOS[task.scenario]
    runs, width = task.stop - task.start, len(task.intervals)
    times = np.full((runs, width), np.inf)
    waited = np.full((runs, width), np.inf)
    blocks = np.zeros((runs, width), dtype=np.int64)
    conditions = [[""] * runs for _ in task.intervals]
    span = history_span(RollbackConfig(history_seconds=task.history))
    for i, run in enumerate(range(task.start, task.stop)):
        rng = rng_for(task.seed, scenario.name, run)
        stream = simulate(scenario, rng)
        grid = float(rng.random())  # after the stream: detection.py's draws are unchanged
        history = earlier = None
        if task.history:
            history = history_for(
                scenario, rng_for(task.seed, f"{scenario.name}/history", run), task.history
            )
            if span > task.history:  # as detection.swings_for draws it
                earlier = history_for(
                    scenario,
                    rng_for(task.seed, f"{scenario.name}/swings", run),
                    span - task.history,
                    latency=False,
                )
        line = timeline(stream, history, earlier)
        if task.buckets == "prometheus":
            histograms, low = coarsened(line.histograms, line.low, PROMETHEUS_DEFAULT_LE_MS)
            line = dataclasses.replace(line, histograms=histograms, low=low)
        for k, interval in enumerate(task.intervals):
            phase = int(grid * interval)
            run_stream, prime, swings = scraped(line, interval, phase)
            times[i, k], conditions[k][i], blocks[i, k] = canaryguard(
                run_stream, scenario, prime, None, swings
            )
        if 1 in task.intervals:
            one = times[i, task.intervals.index(1)]
            for k, interval in enumerate(task.intervals):
                waited[i, k] = next_scrape(
                    one, scenario, stream.lag, interval, int(grid * interval)
                )
    return Outcome(times, waited, conditions, blocks)


def merge(outcomes: Sequence[Outcome]) -> Outcome:
    width = outcomes[0].times.shape[1]
    return Outcome(
        np.concatenate([o.times for o in outcomes]),
        np.concatenate([o.waited for o in outcomes]),
        [[c for o in outcomes for c in o.conditions[k]] for k in range(width)],
        np.concatenate([o.blocks for o in outcomes]),
    )


def run_all(tasks: dict[str, list[Task]], workers: int, started: float) -> dict[str, Outcome]:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: dict[str, list[Future[Outcome]]] = {
            name: [pool.submit(run_task, task) for task in chunk] for name, chunk in tasks.items()
        }
        results: dict[str, Outcome] = {}
        for name, pending in futures.items():
            results[name] = merge([future.result() for future in pending])
            print(
                f"  {name}: {len(results[name].times)} runs done at "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return results


def tasks_for(  # noqa: PLR0917 - one per command-line setting
    name: str, runs: int, seed: int, intervals: tuple[int, ...], history: int, buckets: str
) -> list[Task]:
    size = CHUNK_REGRESSION if SCENARIOS[name].regression else CHUNK_NULL
    return [
        Task(name, start, min(start + size, runs), seed, intervals, history, buckets)
        for start in range(0, runs, size)
    ]


# -- reporting ---------------------------------------------------------------------------------


def interval_label(interval: int) -> str:
    return "1 s (SDK)" if interval == 1 else f"{interval} s"


def ratio_text(value: float, reference: float) -> str:
    if math.isfinite(value) and math.isfinite(reference) and reference > 0:
        return f"{value / reference:.2f}"
    return "-"


def regression_table(
    scenarios: Sequence[Scenario], outcomes: dict[str, Outcome], intervals: Sequence[int]
) -> str:
    header = [
        "scenario",
        "scrape interval",
        "detected",
        "median s",
        "p95 s",
        "median / 1 s median",
        "1 s decision at the next scrape: median s",
        "p95 s",
    ]
    lines = [header]
    for scenario in scenarios:
        outcome = outcomes[scenario.name]
        horizon = scenario.seconds
        reference = (
            Row(scenario, "1", outcome.times[:, intervals.index(1)]).quantile(0.5)
            if 1 in intervals
            else math.nan
        )
        for k, interval in enumerate(intervals):
            row = Row(scenario, str(interval), outcome.times[:, k])
            wait = Row(scenario, str(interval), outcome.waited[:, k])
            known = 1 in intervals
            lines.append(
                [
                    scenario.title,
                    interval_label(interval),
                    f"{row.decided / row.runs:.1%}",
                    seconds_text(row.quantile(0.5), horizon),
                    seconds_text(row.quantile(0.95), horizon),
                    ratio_text(row.quantile(0.5), reference),
                    seconds_text(wait.quantile(0.5), horizon) if known else "-",
                    seconds_text(wait.quantile(0.95), horizon) if known else "-",
                ]
            )
    return markdown_table(lines, numeric={2, 3, 4, 5, 6, 7})


def null_table(
    scenarios: Sequence[Scenario], outcomes: dict[str, Outcome], intervals: Sequence[int]
) -> str:
    header = ["scenario", "scrape interval", "false rollbacks", "rate", "95 % upper"]
    lines = [header]
    for scenario in scenarios:
        outcome = outcomes[scenario.name]
        for k, interval in enumerate(intervals):
            row = Row(scenario, str(interval), outcome.times[:, k])
            lines.append(
                [
                    scenario.title,
                    interval_label(interval),
                    f"{row.decided}/{row.runs}",
                    f"{row.decided / row.runs:.2%}",
                    f"{row.upper():.2%}",
                ]
            )
    return markdown_table(lines, numeric={2, 3, 4})


def tests_note(scenario: Scenario, outcome: Outcome, intervals: Sequence[int]) -> str:
    parts = []
    for k, interval in enumerate(intervals):
        counts = Counter(c for c in outcome.conditions[k] if c)
        listed = ", ".join(f"{name} {n}" for name, n in counts.most_common()) or "none"
        slow = int((outcome.blocks[:, k] == SLOW_BLOCK_SECONDS).sum())
        found = outcome.times[:, k][np.isfinite(outcome.times[:, k])]
        when = ""
        if not scenario.regression and found.size:
            when = f" at {', '.join(f'{t:.0f}' for t in np.sort(found)[:8])}"
            when += " ..." if found.size > 8 else ""
            when += " s"
        parts.append(f"{interval} s: {listed}{when} (minute blocks {slow})")
    return f"- {scenario.title}: " + "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    intervals = tuple(sorted(set(args.intervals)))
    chosen = [SCENARIOS[name] for name in dict.fromkeys(args.scenarios)]
    jobs = {
        s.name: tasks_for(
            s.name,
            args.runs if s.regression else args.null_runs,
            args.seed,
            intervals,
            args.history,
            args.buckets,
        )
        for s in chosen
    }
    print(
        f"simulating {', '.join(jobs)} on {args.workers} processes, scrape intervals "
        f"{', '.join(str(i) for i in intervals)} s, {args.buckets} latency buckets",
        flush=True,
    )
    outcomes = run_all(jobs, args.workers, started)
    elapsed = time.perf_counter() - started
    regressions = [s for s in chosen if s.regression]
    nulls = [s for s in chosen if not s.regression]

    print()
    print(
        f"{args.runs} runs per regression scenario (10 min each), {args.null_runs} per "
        f"no-regression scenario (30 min each); seed {args.seed}; history {args.history} s; "
        f"{args.buckets} latency buckets; {elapsed / 60:.1f} min on {args.workers} processes."
    )
    if regressions:
        print()
        print(
            "Regressions (time to detect from the onset; 1 s is the SDK's per-second reports; "
            "the last two columns: the 1 s decisions moved to each interval's next scrape):"
        )
        print()
        print(regression_table(regressions, outcomes, intervals))
    if nulls:
        print()
        print("No regression (a rollback is a false rollback):")
        print()
        print(null_table(nulls, outcomes, intervals))
    print()
    print("Deciding test per interval (and runs in which minute blocks were chosen):")
    for scenario in chosen:
        print(tests_note(scenario, outcomes[scenario.name], intervals))
    if args.json:
        report = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "elapsed_s": elapsed,
            "rows": [
                {
                    "scenario": scenario.name,
                    "interval_s": interval,
                    "runs": row.runs,
                    "decided": row.decided,
                    "median_s": row.quantile(0.5),
                    "p95_s": row.quantile(0.95),
                    "upper95": row.upper(),
                    "waited_median_s": Row(scenario, "", o.waited[:, k]).quantile(0.5),
                    "tests": Counter(c for c in o.conditions[k] if c),
                    "minute_blocks": int((o.blocks[:, k] == SLOW_BLOCK_SECONDS).sum()),
                }
                for scenario in chosen
                for o in (outcomes[scenario.name],)
                for k, interval in enumerate(intervals)
                for row in (Row(scenario, str(interval), o.times[:, k]),)
            ],
        }
        write_report(args.json, report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=positive, help="per regression scenario (default 500)")
    parser.add_argument("--null-runs", type=positive, help="per null scenario (default 1500)")
    parser.add_argument(
        "--intervals",
        type=positive,
        nargs="+",
        default=list(INTERVALS),
        help="scrape intervals in seconds (default 1 5 15 30; 1: the SDK's reports)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=list(SCENARIOS),
        default=list(DEFAULT_SCENARIOS),
        help=f"bench/detection.py's scenarios (default: {' '.join(DEFAULT_SCENARIOS)})",
    )
    add_simulation_options(parser)
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY_SECONDS,
        help=f"seconds of stable's traffic before each canary (default {HISTORY_SECONDS})",
    )
    parser.add_argument(
        "--buckets",
        choices=["own", "prometheus"],
        default="own",
        help="latency buckets: canaryguard's own, or the Prometheus clients' defaults",
    )
    parser.add_argument("--quick", action="store_true", help="100 / 250 runs by default")
    args = parser.parse_args(argv)
    args.runs = args.runs or (100 if args.quick else 500)
    args.null_runs = args.null_runs or (250 if args.quick else 1500)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
