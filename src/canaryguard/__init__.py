"""canaryguard: roll out versioned policy configuration as canaries, and roll back bad ones.

The public API is the names in ``__all__``; they are loaded on first use, so that importing a
light submodule (the client SDK, the pure assignment code) does not pull in the database stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryguard.domain.assignment import Criterion, Split, Variant, choose_variant
    from canaryguard.domain.errors import (
        AlreadyExists,
        CanaryGuardError,
        Conflict,
        IllegalTransition,
        IntegrityError,
        InvalidInput,
        NotFound,
        RollbackFailedError,
        SchemaViolation,
        Unavailable,
    )
    from canaryguard.domain.events import EventRecord
    from canaryguard.domain.models import (
        AlertLevel,
        Assignment,
        AuditRecord,
        Deployment,
        DeploymentState,
        MetricsSnapshot,
        PolicyVersion,
        RollbackAlert,
        RollbackConfig,
        RollbackKind,
        RollbackMetrics,
        RollbackMode,
        RollbackRecord,
        RollbackStage,
        RollbackStatus,
        Snapshot,
        SnapshotInfo,
        SnapshotKind,
        StagedRollbackConfig,
    )
    from canaryguard.engine.app import CanaryGuard
    from canaryguard.wiring import Settings, open_canaryguard

__version__ = "0.1.0"

_WHERE = {
    "Criterion": "canaryguard.domain.assignment",
    "Split": "canaryguard.domain.assignment",
    "Variant": "canaryguard.domain.assignment",
    "choose_variant": "canaryguard.domain.assignment",
    "AlreadyExists": "canaryguard.domain.errors",
    "CanaryGuardError": "canaryguard.domain.errors",
    "Conflict": "canaryguard.domain.errors",
    "IllegalTransition": "canaryguard.domain.errors",
    "IntegrityError": "canaryguard.domain.errors",
    "InvalidInput": "canaryguard.domain.errors",
    "NotFound": "canaryguard.domain.errors",
    "RollbackFailedError": "canaryguard.domain.errors",
    "SchemaViolation": "canaryguard.domain.errors",
    "Unavailable": "canaryguard.domain.errors",
    "EventRecord": "canaryguard.domain.events",
    "AlertLevel": "canaryguard.domain.models",
    "Assignment": "canaryguard.domain.models",
    "AuditRecord": "canaryguard.domain.models",
    "Deployment": "canaryguard.domain.models",
    "DeploymentState": "canaryguard.domain.models",
    "MetricsSnapshot": "canaryguard.domain.models",
    "PolicyVersion": "canaryguard.domain.models",
    "RollbackAlert": "canaryguard.domain.models",
    "RollbackConfig": "canaryguard.domain.models",
    "RollbackKind": "canaryguard.domain.models",
    "RollbackMetrics": "canaryguard.domain.models",
    "RollbackMode": "canaryguard.domain.models",
    "RollbackRecord": "canaryguard.domain.models",
    "RollbackStage": "canaryguard.domain.models",
    "RollbackStatus": "canaryguard.domain.models",
    "Snapshot": "canaryguard.domain.models",
    "SnapshotInfo": "canaryguard.domain.models",
    "SnapshotKind": "canaryguard.domain.models",
    "StagedRollbackConfig": "canaryguard.domain.models",
    "CanaryGuard": "canaryguard.engine.app",
    "Settings": "canaryguard.wiring",
    "open_canaryguard": "canaryguard.wiring",
}

__all__ = [
    "AlertLevel",
    "AlreadyExists",
    "Assignment",
    "AuditRecord",
    "CanaryGuard",
    "CanaryGuardError",
    "Conflict",
    "Criterion",
    "Deployment",
    "DeploymentState",
    "EventRecord",
    "IllegalTransition",
    "IntegrityError",
    "InvalidInput",
    "MetricsSnapshot",
    "NotFound",
    "PolicyVersion",
    "RollbackAlert",
    "RollbackConfig",
    "RollbackFailedError",
    "RollbackKind",
    "RollbackMetrics",
    "RollbackMode",
    "RollbackRecord",
    "RollbackStage",
    "RollbackStatus",
    "SchemaViolation",
    "Settings",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotKind",
    "Split",
    "StagedRollbackConfig",
    "Unavailable",
    "Variant",
    "choose_variant",
    "open_canaryguard",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'canaryguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
