"""Detector checkpoints: a detector rebuilt from one (through JSON) goes on exactly as the one it
came from, and a checkpoint that does not fit is refused with its fault named."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.domain.detector import (
    CHECKPOINT_VERSION,
    CheckpointError,
    Counts,
    Detector,
    DetectorConfig,
    VerdictKind,
)


def second(rng: random.Random, canary_rate: float) -> tuple[Counts, Counts]:
    """One second of 900 stable and 100 canary requests, with errors and latency buckets."""
    stable_errors = sum(rng.random() < 0.01 for _ in range(900))
    canary_errors = sum(rng.random() < canary_rate for _ in range(100))
    stable_slow = sum(rng.random() < 0.1 for _ in range(900))
    canary_slow = sum(rng.random() < 0.1 * canary_rate / 0.01 for _ in range(100))
    return (
        Counts(900, stable_errors, {41: 900 - stable_slow, 60: stable_slow}),
        Counts(100, canary_errors, {41: 100 - canary_slow, 60: canary_slow}),
    )


def history(rng: random.Random, seconds: int) -> list[Counts]:
    return [
        Counts(1000, sum(rng.random() < 0.01 for _ in range(1000)), {41: 900, 60: 100})
        for _ in range(seconds)
    ]


def through_json(detector: Detector) -> Detector:
    return Detector.from_checkpoint(json.loads(json.dumps(detector.checkpoint())))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    history_seconds=st.sampled_from([0, 35, 120]),
    before=st.integers(0, 80),
    after=st.integers(1, 40),
    canary_rate=st.sampled_from([0.005, 0.01, 0.03]),
    block_seconds=st.sampled_from([2, 10, 17]),
    scrape=st.sampled_from([1, 7, 15]),
)
def test_a_detector_restored_from_its_checkpoint_goes_on_exactly_as_the_original(  # noqa: PLR0917 - one argument per generated value
    seed: int,
    history_seconds: int,
    before: int,
    after: int,
    canary_rate: float,
    block_seconds: int,
    scrape: int,
) -> None:
    rng = random.Random(seed)

    def at(s: int) -> tuple[Counts, Counts]:
        # counts every ``scrape`` seconds, the seconds between empty (as scrapes lump them)
        return second(rng, canary_rate) if s % scrape == scrape - 1 else (Counts(), Counts())

    original = Detector(DetectorConfig(block_seconds=block_seconds), started_at=1000)
    if history_seconds:
        original.prime(history(rng, history_seconds))
    for s in range(before):
        original.update(1000 + s, *at(s))
    restored = through_json(original)
    assert restored.checkpoint() == json.loads(json.dumps(original.checkpoint()))
    for s in range(before, before + after):
        stable, canary = at(s)
        verdict = original.update(1000 + s, stable, canary)
        assert restored.update(1000 + s, stable, canary) == verdict
    assert restored.states() == original.states()
    assert restored.current() == original.current()


def test_a_regression_verdict_survives_the_checkpoint() -> None:
    rng = random.Random(3)
    detector = Detector()
    s = 0
    while detector.current().kind is not VerdictKind.REGRESSION:
        detector.update(s, *second(rng, 0.05))
        s += 1
    restored = through_json(detector)
    assert restored.current() == detector.current()
    assert restored.update(s, *second(rng, 0.0)).kind is VerdictKind.REGRESSION


def test_a_restored_detector_keeps_the_config_it_was_built_with() -> None:
    config = DetectorConfig(alpha=0.002, warmup_seconds=30, block_seconds=60)
    assert through_json(Detector(config, started_at=5)).config == config


def test_a_restored_detector_may_not_be_primed_again() -> None:
    detector = Detector()
    detector.prime(history(random.Random(1), 30))
    with pytest.raises(RuntimeError, match="given already"):
        through_json(detector).prime(history(random.Random(2), 30))


def checkpoint() -> dict[str, Any]:
    rng = random.Random(7)
    detector = Detector()
    for s in range(30):
        detector.update(s, *second(rng, 0.01))
    loaded: dict[str, Any] = json.loads(json.dumps(detector.checkpoint()))
    return loaded


def test_a_checkpoint_of_another_layout_is_refused() -> None:
    data = checkpoint() | {"version": CHECKPOINT_VERSION + 1}
    with pytest.raises(CheckpointError, match="layout version"):
        Detector.from_checkpoint(data)


def test_a_checkpoint_from_when_blocks_counted_seconds_with_traffic_is_refused() -> None:
    # layout 1 counted a block's seconds differently: its tick counts would mislead this one
    data = checkpoint() | {"version": 1}
    with pytest.raises(CheckpointError, match="layout version 1"):
        Detector.from_checkpoint(data)


def test_a_checkpoint_missing_a_field_is_refused_naming_it() -> None:
    data = checkpoint()
    del data["stable_measured"]
    with pytest.raises(CheckpointError, match="missing \\['stable_measured'\\]"):
        Detector.from_checkpoint(data)


def test_a_test_state_with_an_unknown_field_is_refused_naming_it() -> None:
    data = checkpoint()
    data["tests"][0]["surprise"] = 1
    with pytest.raises(CheckpointError, match="unknown \\['surprise'\\]"):
        Detector.from_checkpoint(data)


def test_a_value_of_the_wrong_type_is_refused_naming_it() -> None:
    data = checkpoint()
    data["tests"][0]["canary_events"] = "many"
    with pytest.raises(CheckpointError, match="canary_events: expected an integer"):
        Detector.from_checkpoint(data)


def test_a_log_likelihood_list_of_the_wrong_length_is_refused() -> None:
    data = checkpoint()
    data["tests"][0]["_log_lr"] = [0.0]
    with pytest.raises(CheckpointError, match="_log_lr: expected a list of"):
        Detector.from_checkpoint(data)


def test_a_checkpoint_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CheckpointError, match="expected an object"):
        Detector.from_checkpoint([1, 2])  # type: ignore[arg-type]


def test_a_config_out_of_range_is_refused() -> None:
    data = checkpoint()
    data["config"]["alpha"] = 2.0
    with pytest.raises(CheckpointError, match="alpha must be between 0 and 1"):
        Detector.from_checkpoint(data)


def test_a_checkpoint_for_another_mixture_of_ratios_is_refused() -> None:
    data = checkpoint()
    data["mixture"][0][0] = 1.05
    with pytest.raises(CheckpointError, match="another mixture"):
        Detector.from_checkpoint(data)


def test_a_number_too_large_for_a_float_is_refused() -> None:
    data = checkpoint()
    data["tests"][0]["dispersion"] = 10**400
    with pytest.raises(CheckpointError, match="malformed"):
        Detector.from_checkpoint(data)
