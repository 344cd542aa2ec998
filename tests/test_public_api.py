"""The public API is exactly what ``__all__`` says, and light modules stay light."""

from __future__ import annotations

import subprocess
import sys

import canaryguard

EXPECTED = {
    "AlertLevel", "AlreadyExists", "Assignment", "AuditRecord", "CanaryGuard", "CanaryGuardError", "Conflict",
    "Criterion", "Deployment", "DeploymentState", "EventRecord", "IllegalTransition",
    "IntegrityError", "InvalidInput", "MetricsSnapshot", "NotFound", "PolicyVersion",
    "RollbackAlert", "RollbackConfig", "RollbackFailedError", "RollbackKind", "RollbackMetrics",
    "RollbackMode", "RollbackRecord", "RollbackStage", "RollbackStatus", "SchemaViolation",
    "Settings", "Snapshot", "SnapshotInfo", "SnapshotKind", "Split", "StagedRollbackConfig",
    "Unavailable", "Variant", "choose_variant", "open_canaryguard",
}  # fmt: skip


def test_public_names_are_exactly_the_curated_ones() -> None:
    assert set(canaryguard.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in canaryguard.__all__:
        assert getattr(canaryguard, name) is not None


def test_importing_assignment_loads_no_database_or_pydantic() -> None:
    code = (
        "import sys, canaryguard.domain.assignment;"
        "heavy = {'sqlalchemy', 'pydantic', 'cryptography', 'jsonschema'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
