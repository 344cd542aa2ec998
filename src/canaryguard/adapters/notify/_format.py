"""What the notifiers say: the CloudEvent they carry and the metrics in words."""

from __future__ import annotations

import hashlib
from typing import Any

from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import AlertLevel, MetricsSnapshot, RollbackAlert

__all__ = ["LEVEL_EMOJI", "cloudevent_for", "delivery_id", "metrics_lines", "percent"]

LEVEL_EMOJI: dict[AlertLevel, str] = {
    AlertLevel.INFO: ":information_source:",
    AlertLevel.WARNING: ":warning:",
    AlertLevel.CRITICAL: ":rotating_light:",
    AlertLevel.EMERGENCY: ":sos:",
}


def cloudevent_for(alert: RollbackAlert, record: EventRecord) -> dict[str, Any]:
    """The event's CloudEvent with the alert's level and sentence as extension attributes, so
    a receiver can route and show it without knowing every event type."""
    envelope = record.to_cloudevent()
    envelope["canaryguardlevel"] = alert.level.value
    envelope["canaryguardmessage"] = alert.message
    return envelope


def delivery_id(record: EventRecord) -> str:
    """``evt_<seq>_<12 hex>``: the same for every attempt and every replica, and unique across
    installations, whose sequence numbers all start at 1 (two databases sending to one
    receiver or mailbox must not look like duplicates of each other)."""
    origin = f"{record.time.isoformat()}|{record.deployment}|{record.type}|{record.revision}"
    digest = hashlib.blake2b(origin.encode(), digest_size=6).hexdigest()
    return f"evt_{record.seq}_{digest}"


def percent(rate: float) -> str:
    return f"{rate * 100:.2f} %"


def metrics_lines(metrics: MetricsSnapshot) -> list[str]:
    """A small fixed-width table of both variants, for plain text."""
    until = metrics.until.isoformat().replace("+00:00", "Z")
    lines = [
        f"Metrics over {metrics.window_seconds:g} s until {until}:",
        f"  {'':8}{'requests':>10}{'errors':>10}{'error rate':>12}{'p99 ms':>10}",
    ]
    for label, variant in (("canary", metrics.canary), ("stable", metrics.stable)):
        lines.append(
            f"  {label:8}{variant.requests:>10}{variant.errors:>10}"
            f"{percent(variant.error_rate):>12}{variant.p99_ms:>10.1f}"
        )
    return lines
