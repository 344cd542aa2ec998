"""Assignment: buckets, criteria, forced groups, and its properties."""

from __future__ import annotations

import random
from hashlib import blake2b

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canaryguard.domain.assignment import (
    BUCKETS,
    Criterion,
    Split,
    Variant,
    bucket_of,
    choose_variant,
    percent_to_basis_points,
)

user_ids = st.text(min_size=1, max_size=24)


def test_bucket_is_the_documented_blake2b_formula() -> None:

    digest = blake2b(b"salt\x1fuser-42", digest_size=8).digest()
    assert bucket_of("salt", "user-42") == int.from_bytes(digest, "big") % BUCKETS


def test_zero_percent_sends_everyone_to_stable() -> None:
    split = Split(canary_basis_points=0, salt="s")
    assert {choose_variant(split, user_id=str(i)) for i in range(500)} == {Variant.STABLE}


def test_hundred_percent_sends_everyone_to_canary() -> None:
    split = Split(canary_basis_points=BUCKETS, salt="s")
    assert {choose_variant(split, user_id=str(i)) for i in range(500)} == {Variant.CANARY}


def test_stable_group_wins_over_canary_group() -> None:
    split = Split(
        canary_basis_points=BUCKETS, salt="s", canary_groups=("qa",), stable_groups=("vip",)
    )
    assert choose_variant(split, user_id="u", groups={"qa", "vip"}) is Variant.STABLE


def test_canary_group_gets_canary_at_zero_percent() -> None:
    split = Split(canary_basis_points=0, salt="s", canary_groups=("qa",))
    assert choose_variant(split, user_id="u", groups=["qa"]) is Variant.CANARY


def test_missing_key_gets_stable() -> None:
    split = Split(canary_basis_points=9_999, criterion=Criterion.USER_ID, salt="s")
    assert choose_variant(split, ip="10.0.0.1") is Variant.STABLE


def test_ip_criterion_uses_the_ip() -> None:
    split = Split(canary_basis_points=5_000, criterion=Criterion.IP, salt="s")
    expected = Variant.CANARY if bucket_of("s", "10.1.2.3") < 5_000 else Variant.STABLE
    assert choose_variant(split, user_id="ignored", ip="10.1.2.3") is expected


def test_attribute_criterion_uses_the_named_attribute() -> None:
    split = Split(
        canary_basis_points=5_000, criterion=Criterion.ATTRIBUTE, attribute="tenant", salt="s"
    )
    expected = Variant.CANARY if bucket_of("s", "acme") < 5_000 else Variant.STABLE
    assert choose_variant(split, attributes={"tenant": "acme"}) is expected


def test_attribute_criterion_needs_an_attribute_name() -> None:
    with pytest.raises(ValueError, match="attribute"):
        Split(canary_basis_points=1, criterion=Criterion.ATTRIBUTE, salt="s")


def test_random_criterion_follows_the_random_source() -> None:
    split = Split(canary_basis_points=2_500, criterion=Criterion.RANDOM, salt="s")
    assert choose_variant(split, rng=lambda: 0.2) is Variant.CANARY
    assert choose_variant(split, rng=lambda: 0.3) is Variant.STABLE


@pytest.mark.parametrize(("percent", "expected"), [(0, 0), (12.34, 1234), (100, 10_000), (0.01, 1)])
def test_percent_converts_to_basis_points(percent: float, expected: int) -> None:
    assert percent_to_basis_points(percent) == expected


@pytest.mark.parametrize("percent", [-1, 100.01, 12.345])
def test_percent_out_of_range_or_too_fine_is_refused(percent: float) -> None:
    with pytest.raises(ValueError, match="percentage"):
        percent_to_basis_points(percent)


def test_non_number_percent_is_refused() -> None:
    with pytest.raises(TypeError, match="number"):
        percent_to_basis_points("10")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(basis_points=st.integers(min_value=100, max_value=9_900), salt=st.text(max_size=8))
def test_share_converges_to_the_configured_percentage(basis_points: int, salt: str) -> None:
    split = Split(canary_basis_points=basis_points, salt=salt)
    n = 20_000
    canary = sum(choose_variant(split, user_id=f"user-{i}") is Variant.CANARY for i in range(n))
    expected = basis_points / BUCKETS
    # 5 standard deviations of a binomial share: flaky with probability ~1e-6
    tolerance = 5 * (expected * (1 - expected) / n) ** 0.5
    assert abs(canary / n - expected) < tolerance


@given(split_bp=st.integers(0, BUCKETS), salt=st.text(max_size=8), user=user_ids)
def test_assignment_is_sticky(split_bp: int, salt: str, user: str) -> None:
    split = Split(canary_basis_points=split_bp, salt=salt)
    assert choose_variant(split, user_id=user) is choose_variant(split, user_id=user)


@given(
    low=st.integers(0, BUCKETS),
    high=st.integers(0, BUCKETS),
    salt=st.text(max_size=8),
    user=user_ids,
)
def test_raising_the_percentage_never_moves_a_canary_user_back(
    low: int, high: int, salt: str, user: str
) -> None:
    low, high = sorted((low, high))
    before = choose_variant(Split(canary_basis_points=low, salt=salt), user_id=user)
    after = choose_variant(Split(canary_basis_points=high, salt=salt), user_id=user)
    assert not (before is Variant.CANARY and after is Variant.STABLE)


@settings(max_examples=20, deadline=None)
@given(salt_a=st.text(min_size=1, max_size=8), salt_b=st.text(min_size=1, max_size=8))
def test_deployments_with_different_salts_bucket_independently(salt_a: str, salt_b: str) -> None:
    if salt_a == salt_b:
        return
    users = [f"u{i}" for i in range(4_000)]
    a = [bucket_of(salt_a, u) < 5_000 for u in users]
    b = [bucket_of(salt_b, u) < 5_000 for u in users]
    both = sum(x and y for x, y in zip(a, b, strict=True)) / len(users)
    # independent halves overlap on a quarter of users; identical bucketing would give a half
    assert abs(both - 0.25) < 0.05


def test_random_criterion_share_converges() -> None:
    split = Split(canary_basis_points=1_000, criterion=Criterion.RANDOM, salt="s")
    rng = random.Random(7)
    hits = sum(choose_variant(split, rng=rng.random) is Variant.CANARY for _ in range(20_000))
    assert abs(hits / 20_000 - 0.10) < 0.01
