"""Snapshot retention: which snapshots to drop so a deployment keeps at most ``max_snapshots``."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from canaryguard.domain.models import SnapshotInfo

__all__ = ["snapshots_to_drop"]


def snapshots_to_drop(
    snapshots: Sequence[SnapshotInfo], *, keep: int, protected: Collection[str]
) -> list[str]:
    """The ids of the oldest snapshots beyond ``keep``, never a pinned or protected one.

    Pinned and protected snapshots count towards ``keep`` but are never dropped, so a deployment
    with more of them than ``keep`` keeps them all and nothing else.
    """
    excess = len(snapshots) - keep
    if excess <= 0:
        return []
    dropped: list[str] = []
    for info in sorted(snapshots, key=lambda s: s.seq):
        if len(dropped) == excess:
            break
        if info.pinned or info.id in protected:
            continue
        dropped.append(info.id)
    return dropped
