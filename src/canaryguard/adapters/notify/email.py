"""Email alerts over SMTP (aiosmtplib), one message per alert.

The ``Message-ID`` is made of the delivery id (``delivery_id``) and ``X-Canaryguard-Event-Id``
repeats it, so a message sent twice (a retry after a lost answer) is recognisably the same.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Literal

import aiosmtplib

from canaryguard.adapters.notify._format import cloudevent_for, delivery_id, metrics_lines
from canaryguard.domain.errors import DeliveryFailed, InvalidInput
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import RollbackAlert

__all__ = ["DEFAULT_TIMEOUT", "EmailNotifier", "SmtpSecurity", "email_message"]

DEFAULT_TIMEOUT = 10.0  # seconds for one whole attempt

SmtpSecurity = Literal["starttls", "tls", "none"]
_SUBJECT_MAX = 120


def _subject(alert: RollbackAlert) -> str:
    # a header may not hold line breaks: fold every run of whitespace into one space
    text = " ".join(alert.message.split())
    if len(text) > _SUBJECT_MAX:
        text = text[: _SUBJECT_MAX - 1] + "…"
    return f"[canaryguard {alert.level.value.upper()}] {text}"


def email_message(
    alert: RollbackAlert, record: EventRecord, *, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """The plain-text message of one alert."""
    event_id = delivery_id(record)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "canaryguard.invalid"
    message = EmailMessage()
    message["Subject"] = _subject(alert)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<canaryguard.{event_id}@{domain}>"
    message["X-Canaryguard-Event-Id"] = event_id
    time = alert.timestamp.isoformat().replace("+00:00", "Z")
    lines = [
        alert.message,
        "",
        f"Deployment: {alert.deployment_id}",
        f"Time:       {time}",
        f"Level:      {alert.level.value}",
        f"Event:      {record.type} (#{record.seq})",
    ]
    if alert.metrics is not None:
        lines += ["", *metrics_lines(alert.metrics)]
    lines += ["", "CloudEvent:", json.dumps(cloudevent_for(alert, record), indent=2)]
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailNotifier:
    """Mails each alert to ``recipients`` through one SMTP server (one attempt per ``send``).

    ``security``: ``starttls`` (upgrade a plain connection, usually port 587), ``tls``
    (TLS from the first byte, usually 465) or ``none`` (plain text: a relay on loopback only).
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        security: SmtpSecurity,
        username: str | None = None,
        password: str | None = None,
        sender: str,
        recipients: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not recipients:
            raise InvalidInput(f"email channel {name!r}: no recipients")
        if not 1 <= port <= 65_535:
            raise InvalidInput(f"email channel {name!r}: port {port} is not in 1..65535")
        if security not in ("starttls", "tls", "none"):
            raise InvalidInput(f"email channel {name!r}: unknown security {security!r}")
        if not timeout > 0:
            raise InvalidInput(f"email channel {name!r}: the timeout must be positive")
        self._name = name
        self._host = host
        self._port = port
        self._security = security
        self._username = username
        self._password = password
        self._sender = sender
        self._recipients = tuple(recipients)
        self._timeout = timeout
        self._tls = tls

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return "email"

    def __repr__(self) -> str:
        return (
            f"EmailNotifier(name={self._name!r}, host={self._host!r}, port={self._port}, "
            f"security={self._security!r}, recipients={list(self._recipients)!r})"
        )

    async def send(self, alert: RollbackAlert, record: EventRecord) -> None:
        """Deliver once; ``DeliveryFailed``, ``permanent`` when the server refused the message,
        sender, recipients or credentials for good (5xx) or cannot do what ``security`` asks."""
        message = email_message(alert, record, sender=self._sender, recipients=self._recipients)
        where = f"email channel {self._name!r}: {self._host}:{self._port}"
        try:
            async with asyncio.timeout(self._timeout):
                refused, _ = await aiosmtplib.send(
                    message,
                    sender=self._sender,
                    recipients=list(self._recipients),
                    hostname=self._host,
                    port=self._port,
                    username=self._username,
                    password=self._password,
                    use_tls=self._security == "tls",
                    # False, not None: None would upgrade whenever the server offers it
                    start_tls=self._security == "starttls",
                    tls_context=self._tls,
                    timeout=self._timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            answers = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            # 4xx refusals (a full mailbox, greylisting) may pass later
            permanent = all(r.code >= 500 for r in exc.recipients)
            raise DeliveryFailed(
                f"{where} refused every recipient ({answers})", permanent=permanent
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx is SMTP's "try again later"; 5xx (and anything odd) will not change
            permanent = not 400 <= exc.code < 500
            raise DeliveryFailed(
                f"{where} answered {exc.code} {exc.message}", permanent=permanent
            ) from exc
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            raise DeliveryFailed(f"{where} did not answer within {self._timeout:g} s") from None
        except (OSError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError) as exc:
            raise DeliveryFailed(f"{where} could not be reached: {exc}") from exc
        except aiosmtplib.SMTPException as exc:
            # what is left says the server cannot do what the channel asks (no STARTTLS, no
            # AUTH): a configuration to fix, not a moment to wait out
            raise DeliveryFailed(f"{where}: {exc}", permanent=True) from exc
        if refused:
            # the others have it: another attempt would mail them twice
            answers = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in refused.items())
            raise DeliveryFailed(
                f"{where} delivered, but refused some recipients ({answers})", permanent=True
            )

    async def close(self) -> None:
        """Nothing to close: each ``send`` opens and closes its own connection."""
