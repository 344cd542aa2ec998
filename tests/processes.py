"""Worker processes for tests that can never outlive their test.

multiprocessing joins every non-daemon child when the interpreter exits, so one worker that
hangs after a failed assertion holds the whole test run until CI's limit. These are daemon
processes, and whatever is still running when the block ends is killed."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any


@contextmanager
def spawned(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]]
) -> Iterator[tuple[list[BaseProcess], Queue[Any]]]:
    """Start ``target(*a, out)`` for each ``a`` in ``args`` (spawned, so nothing of the test
    process is copied); yields the processes and their shared queue ``out``."""
    context = multiprocessing.get_context("spawn")
    out: Queue[Any] = context.Queue()
    workers: list[BaseProcess] = [
        context.Process(target=target, args=(*a, out), daemon=True) for a in args
    ]
    try:
        for worker in workers:
            worker.start()
        yield workers, out
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
            worker.join(10)
        out.close()
        out.join_thread()
