"""Command-line helpers shared by the benchmarks."""

from __future__ import annotations

import argparse
from types import FrameType

__all__ = ["positive", "positive_seconds", "stop_on_sigterm"]


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


def stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """A SIGTERM unwinds like Ctrl-C, so servers are stopped and schemas dropped."""
    raise KeyboardInterrupt
