"""Recursive diff of two JSON-like values (used to compare snapshots and policy versions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "diff_values"]


@dataclass(frozen=True)
class Change:
    """One difference at a JSON Pointer ``path``."""

    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def diff_values(old: Any, new: Any, path: str = "") -> list[Change]:
    """Every difference between ``old`` and ``new``, walking objects and lists field by field."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(old.keys() | new.keys(), key=str):
            child = f"{path}/{_escape(str(key))}"
            if key not in new:
                changes.append(Change(child, "removed", old=old[key]))
            elif key not in old:
                changes.append(Change(child, "added", new=new[key]))
            else:
                changes.extend(diff_values(old[key], new[key], child))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            child = f"{path}/{index}"
            if index >= len(new):
                changes.append(Change(child, "removed", old=old[index]))
            elif index >= len(old):
                changes.append(Change(child, "added", new=new[index]))
            else:
                changes.extend(diff_values(old[index], new[index], child))
        return changes
    # bool is an int in Python; compare types too so that true -> 1 shows up as a change
    if type(old) is not type(new) or old != new:
        return [Change(path or "/", "changed", old=old, new=new)]
    return []
