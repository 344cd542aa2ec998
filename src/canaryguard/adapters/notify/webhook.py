"""Webhooks: the event as a CloudEvent, signed the Standard Webhooks way.

Each POST carries ``webhook-id`` (``delivery_id``: the same on every attempt, so receivers can
drop duplicates), ``webhook-timestamp`` (the attempt's unix time) and ``webhook-signature``
(``v1,`` + base64 of HMAC-SHA256 over ``id.timestamp.body``), so any Standard Webhooks
verifier checks it (https://www.standardwebhooks.com/).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import ssl
import time

from canaryguard.adapters.notify._format import cloudevent_for, delivery_id
from canaryguard.adapters.notify._http import HttpNotifier
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.events import EventRecord
from canaryguard.domain.models import RollbackAlert

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_TIMEOUT",
    "SECRET_PREFIX",
    "WebhookNotifier",
    "sign",
    "webhook_key",
]

DEFAULT_TIMEOUT = 5.0  # seconds for one whole attempt

SECRET_PREFIX = "whsec_"  # noqa: S105 - the marker before the key, not a key
_MIN_KEY_BYTES = 24  # the Standard Webhooks minimum
CONTENT_TYPE = "application/cloudevents+json"


def webhook_key(secret: str) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret, or ``ValueError`` saying what is wrong
    (never repeating the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"the secret must start with {SECRET_PREFIX!r}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # padding is optional in the wild (the reference verifier adds it too)
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"the secret after {SECRET_PREFIX!r} must be base64") from None
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"the secret's key must be at least {_MIN_KEY_BYTES} bytes")
    return key


def sign(key: bytes, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one delivery."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookNotifier(HttpNotifier):
    """POSTs each alert's event as a signed CloudEvent to ``url`` (one attempt per ``send``).

    ``secret`` is ``whsec_`` and the base64 of at least 24 bytes; ``tls``: the context that
    checks the receiver's certificate (default: the system's). Redirects are not followed:
    a signed delivery goes where it was configured to, or fails permanently.
    """

    _kind = "webhook"
    _label = "webhook channel"

    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        try:  # before the client opens: a bad secret leaves nothing to close
            self._key = webhook_key(secret)
        except ValueError as exc:
            raise InvalidInput(f"{self._label} {name!r}: {exc}") from None
        super().__init__(name, url, timeout=timeout, tls=tls)

    async def send(self, alert: RollbackAlert, record: EventRecord) -> None:
        """Deliver once; ``DeliveryFailed`` (``permanent`` for a 3xx or 4xx other than 408,
        425 and 429) when the receiver does not take it."""
        body = json.dumps(cloudevent_for(alert, record), separators=(",", ":")).encode()
        msg_id = delivery_id(record)
        timestamp = int(time.time())
        headers = {
            "content-type": CONTENT_TYPE,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, msg_id=msg_id, timestamp=timestamp, body=body),
        }
        await self._post(body, headers)
