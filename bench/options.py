"""Command-line helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "add_simulation_options",
    "positive",
    "positive_seconds",
    "run_interruptibly",
    "stop_on_sigterm",
    "write_report",
]


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_simulation_options(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--seed`` and ``--json``, as the simulating benchmarks (detection,
    scrape) take them."""
    parser.add_argument("--workers", type=positive, default=2, help="simulation processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the results there")


def write_report(path: str, report: dict[str, Any]) -> None:
    """``report`` as indented JSON at ``path`` (what ``--json`` asks for), and say so."""
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


def stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """A SIGTERM unwinds like Ctrl-C, so servers are stopped and schemas dropped."""
    raise KeyboardInterrupt


def run_interruptibly(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``; Ctrl-C or SIGTERM stop it cleanly (what it started is stopped and removed)
    and exit 130."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: what this run started is stopped and removed", file=sys.stderr)
        return 130
