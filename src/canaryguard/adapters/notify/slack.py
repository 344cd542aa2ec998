"""Slack incoming webhooks: the alert as Block Kit, with a plain-text fallback.

The webhook URL is the credential (anyone holding it can post to the channel), so messages
and ``repr`` show its scheme and host only.
"""

from __future__ import annotations

import json

from canaryguard.adapters.notify._format import LEVEL_EMOJI, percent
from canaryguard.adapters.notify._http import HttpNotifier
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import MetricsSnapshot, RollbackAlert

__all__ = ["DEFAULT_TIMEOUT", "SlackNotifier", "slack_payload"]

DEFAULT_TIMEOUT = 5.0  # seconds for one whole attempt

_HEADER_MAX = 150  # Slack refuses a header block's text beyond this
_SECTION_MAX = 3000  # and a section's


def _escape(text: str) -> str:
    # mrkdwn reads <...> as links and mentions: an alert's text must not ping @channel
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metrics_fields(metrics: MetricsSnapshot) -> list[dict[str, str]]:
    canary, stable = metrics.canary, metrics.stable
    cells = [
        ("Canary requests", f"{canary.requests:,}"),
        ("Stable requests", f"{stable.requests:,}"),
        ("Canary error rate", percent(canary.error_rate)),
        ("Stable error rate", percent(stable.error_rate)),
        ("Canary p99", f"{canary.p99_ms:,.0f} ms"),
        ("Stable p99", f"{stable.p99_ms:,.0f} ms"),
    ]
    return [{"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in cells]


def slack_payload(alert: RollbackAlert, record: EventRecord) -> dict[str, object]:
    """The incoming-webhook JSON of one alert."""
    level = alert.level.value.upper()
    emoji = LEVEL_EMOJI[alert.level]
    blocks: list[dict[str, object]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{emoji} {level}: {alert.deployment_id}", _HEADER_MAX),
                "emoji": True,
            },
        },
        {
            "type": "section",
            # verbatim: Slack does not turn a bare @here or #channel in the text into a mention
            "text": {
                "type": "mrkdwn",
                "text": _cut(_escape(alert.message), _SECTION_MAX),
                "verbatim": True,
            },
        },
    ]
    if alert.metrics is not None:
        blocks.append({"type": "section", "fields": _metrics_fields(alert.metrics)})
    time = alert.timestamp.isoformat().replace("+00:00", "Z")
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"event {record.seq} · `{record.type}` · {time}"}
            ],
        }
    )
    return {"text": f"{emoji} [{level}] {_escape(alert.message)}", "blocks": blocks}


class SlackNotifier(HttpNotifier):
    """Posts each alert to a Slack incoming webhook (one attempt per ``send``)."""

    _kind = "slack"
    _label = "Slack channel"

    def __init__(self, name: str, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(name, url, timeout=timeout)

    async def send(self, alert: RollbackAlert, record: EventRecord) -> None:
        """Deliver once; ``DeliveryFailed`` as for webhooks (Slack answers 404 ``no_service``
        for a revoked URL: permanent)."""
        await self._post(
            json.dumps(slack_payload(alert, record)).encode(),
            {"content-type": "application/json"},
        )
