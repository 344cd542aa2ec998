"""The audit log's hash chain, and its verification.

Each record's hash is ``sha256(prev_hash || "\\n" || canonical_json(fields))`` where the fields
include the record's own sequence number, so a record that is changed, removed, or moved breaks
the chain at that point. The store also keeps the head (last seq and hash), so removing records
from the end is caught too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from canaryguard.domain.canonical import canonical_json
from canaryguard.domain.models import AuditRecord

__all__ = ["GENESIS_HASH", "AuditEntry", "ChainVerdict", "seal_entry", "verify_chain"]

GENESIS_HASH = "sha256:" + "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """What an operation says about itself; the store gives it a place in the chain."""

    actor: str
    action: str
    time: datetime
    deployment: str | None = None
    reason: str | None = None
    revision_before: int | None = None
    revision_after: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(prev_hash: str, seq: int, entry: AuditEntry) -> str:
    body = canonical_json(
        {
            "seq": seq,
            "time": _utc_text(entry.time),
            "actor": entry.actor,
            "action": entry.action,
            "deployment": entry.deployment,
            "reason": entry.reason,
            "revision_before": entry.revision_before,
            "revision_after": entry.revision_after,
            "details": entry.details,
        }
    )
    return "sha256:" + hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def seal_entry(entry: AuditEntry, *, seq: int, prev_hash: str) -> AuditRecord:
    """The record ``entry`` becomes at position ``seq`` after a record hashed ``prev_hash``."""
    return AuditRecord(
        seq=seq,
        time=entry.time,
        actor=entry.actor,
        action=entry.action,
        deployment=entry.deployment,
        reason=entry.reason,
        revision_before=entry.revision_before,
        revision_after=entry.revision_after,
        details=entry.details,
        prev_hash=prev_hash,
        hash=_hash(prev_hash, seq, entry),
    )


@dataclass(frozen=True)
class ChainVerdict:
    """The outcome of a verification: ``ok``, how many records were checked, the first bad one."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify_chain(records: Iterable[AuditRecord], *, head: tuple[int, str] | None) -> ChainVerdict:
    """Walk ``records`` in stored order and name the first one that was changed, removed or moved.

    ``head`` is the stored (seq, hash) of the last record appended, or ``None`` for an empty log.
    """
    expected_seq = 1
    prev_hash = GENESIS_HASH
    checked = 0
    for record in records:
        if record.seq != expected_seq:
            return ChainVerdict(
                ok=False,
                checked=checked,
                first_bad_seq=expected_seq,
                problem=f"record {expected_seq} is missing (found {record.seq} in its place)",
            )
        if record.prev_hash != prev_hash:
            return ChainVerdict(
                ok=False,
                checked=checked,
                first_bad_seq=record.seq,
                problem=f"record {record.seq} does not follow record {record.seq - 1}: "
                "a record was removed or the order changed",
            )
        entry = AuditEntry(
            actor=record.actor,
            action=record.action,
            time=record.time,
            deployment=record.deployment,
            reason=record.reason,
            revision_before=record.revision_before,
            revision_after=record.revision_after,
            details=record.details,
        )
        try:
            written = _hash(prev_hash, record.seq, entry)
        except ValueError:  # details no JSON can carry (NaN): not what was written either
            written = None
        if written != record.hash:
            return ChainVerdict(
                ok=False,
                checked=checked,
                first_bad_seq=record.seq,
                problem=f"record {record.seq} was changed after it was written",
            )
        prev_hash = record.hash
        expected_seq += 1
        checked += 1
    head_seq, head_hash = head if head is not None else (0, GENESIS_HASH)
    if checked < head_seq:
        return ChainVerdict(
            ok=False,
            checked=checked,
            first_bad_seq=checked + 1,
            problem=f"the log ends at record {checked} but {head_seq} were written: "
            "records were removed from the end",
        )
    if checked > head_seq or prev_hash != head_hash:
        return ChainVerdict(
            ok=False,
            checked=checked,
            first_bad_seq=head_seq + 1 if checked > head_seq else checked,
            problem=f"the log has {checked} records but its head names record {head_seq}: "
            "the head was reset or records were written outside canaryguard",
        )
    return ChainVerdict(ok=True, checked=checked)
