"""The detector checkpoints table, on SQLite and PostgreSQL: saved and read back exactly, never
replaced by one that judged less, pruned to the running canaries."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from canaryguard.domain.detector import Counts, Detector
from canaryguard.domain.judge import RunCheckpoint
from canaryguard.engine.app import CanaryGuard

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def checkpoint(run: str, next_second: int, *, seconds: int = 20) -> RunCheckpoint:
    rng = random.Random(next_second)
    detector = Detector(started_at=1000)
    for s in range(seconds):
        stable = sum(rng.random() < 0.01 for _ in range(900))
        canary = sum(rng.random() < 0.02 for _ in range(100))
        detector.update(1000 + s, Counts(900, stable, {41: 900}), Counts(100, canary, {41: 100}))
    return RunCheckpoint(
        run=run,
        deployment="shop/security",
        next_second=next_second,
        detector=detector.checkpoint(),
        saved_at=AT,
    )


async def test_a_saved_checkpoint_reads_back_equal(app: CanaryGuard) -> None:
    saved = checkpoint("run-1", 1020)
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([saved])
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get("run-1") == saved


async def test_a_read_back_checkpoint_restores_the_same_detector(app: CanaryGuard) -> None:
    saved = checkpoint("run-1", 1020)
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([saved])
    async with app.ports.store.read() as tx:
        loaded = await tx.checkpoints.get("run-1")
    assert loaded is not None
    restored = Detector.from_checkpoint(loaded.detector)
    assert restored.states() == Detector.from_checkpoint(saved.detector).states()


async def test_an_unknown_run_has_no_checkpoint(app: CanaryGuard) -> None:
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get("nope") is None


async def test_a_later_checkpoint_replaces_an_earlier_one(app: CanaryGuard) -> None:
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([checkpoint("run-1", 1010)])
    later = checkpoint("run-1", 1020)
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([later])
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get("run-1") == later


async def test_a_checkpoint_that_judged_less_does_not_replace_a_later_one(
    app: CanaryGuard,
) -> None:
    later = checkpoint("run-1", 1020)
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([later])
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([checkpoint("run-1", 1010, seconds=10)])
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get("run-1") == later


async def test_several_runs_are_saved_in_one_call(app: CanaryGuard) -> None:
    saved = [checkpoint(f"run-{n}", 1010 + n) for n in range(3)]
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save(saved)
    async with app.ports.store.read() as tx:
        assert [await tx.checkpoints.get(f"run-{n}") for n in range(3)] == saved


async def test_pruning_drops_the_checkpoints_of_runs_not_kept(app: CanaryGuard) -> None:
    async with app.ports.store.write() as tx:
        await tx.checkpoints.save([checkpoint(f"run-{n}", 1010) for n in range(3)])
    async with app.ports.store.write() as tx:
        assert await tx.checkpoints.prune(keep={"run-1", "run-9"}) == 2
    async with app.ports.store.read() as tx:
        assert await tx.checkpoints.get("run-0") is None
        assert await tx.checkpoints.get("run-1") is not None
        assert await tx.checkpoints.get("run-2") is None
