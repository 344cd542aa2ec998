"""What a client knows of one deployment: the split and both policy documents, at a revision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canaryguard.domain.assignment import Criterion, Split, Variant

__all__ = ["Assignment", "DeploymentState", "PolicyVersion"]


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    name: str
    version: str
    content_hash: str
    document: dict[str, Any]


@dataclass(slots=True)  # not frozen: it is built on every request, and frozen init costs ~40 %
class Assignment:
    """What one request gets, and the revision it was decided at."""

    deployment: str
    revision: int
    variant: Variant
    policy: PolicyVersion

    @property
    def document(self) -> dict[str, Any]:
        return self.policy.document


@dataclass(frozen=True, slots=True)
class DeploymentState:
    name: str
    revision: int
    split: Split
    stable: PolicyVersion
    canary: PolicyVersion | None

    def to_json(self) -> dict[str, Any]:
        def policy(p: PolicyVersion | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {
                "name": p.name,
                "version": p.version,
                "content_hash": p.content_hash,
                "document": p.document,
            }

        s = self.split
        return {
            "name": self.name,
            "revision": self.revision,
            "split": {
                "canary_basis_points": s.canary_basis_points,
                "criterion": s.criterion.value,
                "salt": s.salt,
                "attribute": s.attribute,
                "canary_groups": list(s.canary_groups),
                "stable_groups": list(s.stable_groups),
            },
            "stable": policy(self.stable),
            "canary": policy(self.canary),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeploymentState:
        split = data["split"]
        canary = data.get("canary")
        return cls(
            name=data["name"],
            revision=int(data["revision"]),
            split=Split(
                canary_basis_points=int(split["canary_basis_points"]),
                criterion=Criterion(split["criterion"]),
                salt=split["salt"],
                attribute=split.get("attribute"),
                canary_groups=tuple(split.get("canary_groups", ())),
                stable_groups=tuple(split.get("stable_groups", ())),
            ),
            stable=PolicyVersion(**data["stable"]),
            canary=PolicyVersion(**canary) if canary else None,
        )
