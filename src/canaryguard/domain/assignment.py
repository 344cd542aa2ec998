"""Assignment: which variant (stable or canary) one request gets. Standard library only.

The client SDK runs this on every request, so it is small and cheap, and the server runs the very
same code, so a user lands in the same bucket on both sides.

The bucket of a key is::

    bucket = int.from_bytes(blake2b(salt + "\\x1f" + key, digest_size=8), "big") % 10_000

``salt`` is per deployment (so deployments bucket independently) and ``key`` is the user id, the
IP address or the chosen attribute, depending on the split's criterion. A request is on the
canary when ``bucket < canary_basis_points`` (hundredths of a percent). Raising the percentage
therefore only ever adds buckets: nobody moves from canary back to stable while it grows.

Precedence: a request in a group forced to stable gets stable; else one in a group forced to
canary gets canary; else the criterion decides. A request that lacks the criterion's key (no user
id for the ``user_id`` criterion, say) gets stable: the safe side.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import blake2b

__all__ = [
    "BUCKETS",
    "Criterion",
    "Split",
    "Variant",
    "bucket_of",
    "choose_variant",
    "percent_to_basis_points",
]

BUCKETS = 10_000


class Variant(StrEnum):
    """What one request gets."""

    STABLE = "stable"
    CANARY = "canary"


class Criterion(StrEnum):
    """How requests are split between stable and canary."""

    RANDOM = "random"
    USER_ID = "user_id"
    IP = "ip"
    ATTRIBUTE = "attribute"


@dataclass(frozen=True, slots=True)
class Split:
    """The traffic split of a deployment.

    ``canary_basis_points`` is the canary share in hundredths of a percent (0..10,000), so the
    API's 0.01 % steps are exact integers. ``attribute`` names the request attribute (a header,
    a tenant id, ...) used by the ``attribute`` criterion.
    """

    canary_basis_points: int = 0
    criterion: Criterion = Criterion.USER_ID
    salt: str = ""
    attribute: str | None = None
    canary_groups: tuple[str, ...] = field(default=())
    stable_groups: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.canary_basis_points <= BUCKETS:
            raise ValueError(
                f"canary share must be between 0 and 100 %, got {self.canary_basis_points / 100} %"
            )
        if self.criterion is Criterion.ATTRIBUTE and not self.attribute:
            raise ValueError("the attribute criterion needs the name of the attribute to split on")

    @property
    def canary_percent(self) -> float:
        """The canary share in percent (0..100)."""
        return self.canary_basis_points / 100


def percent_to_basis_points(percent: float) -> int:
    """Turn a percentage with at most two decimals into basis points, refusing anything else."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise TypeError(f"the canary percentage must be a number, got {type(percent).__name__}")
    if not 0 <= percent <= 100:
        raise ValueError(f"the canary percentage must be between 0 and 100, got {percent}")
    basis_points = round(percent * 100)
    if abs(basis_points - percent * 100) > 1e-6:
        raise ValueError(f"the canary percentage goes in steps of 0.01, got {percent}")
    return basis_points


def bucket_of(salt: str, key: str) -> int:
    """The bucket (0..9,999) of ``key`` under ``salt``; see the module docstring."""
    digest = blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose_variant(  # noqa: PLR0911 - one early return per precedence rule keeps the hot path flat
    split: Split,
    *,
    user_id: str | None = None,
    ip: str | None = None,
    attributes: Mapping[str, str] | None = None,
    groups: Collection[str] = (),
    rng: Callable[[], float] = random.random,
) -> Variant:
    """The variant one request gets under ``split``."""
    if groups:
        if split.stable_groups and not set(split.stable_groups).isdisjoint(groups):
            return Variant.STABLE
        if split.canary_groups and not set(split.canary_groups).isdisjoint(groups):
            return Variant.CANARY
    share = split.canary_basis_points
    if share == 0:
        return Variant.STABLE
    if share == BUCKETS:
        return Variant.CANARY
    criterion = split.criterion
    if criterion is Criterion.RANDOM:
        return Variant.CANARY if int(rng() * BUCKETS) < share else Variant.STABLE
    if criterion is Criterion.USER_ID:
        key = user_id
    elif criterion is Criterion.IP:
        key = ip
    else:
        key = attributes.get(split.attribute or "") if attributes else None
    if key is None:
        return Variant.STABLE
    return Variant.CANARY if bucket_of(split.salt, key) < share else Variant.STABLE
