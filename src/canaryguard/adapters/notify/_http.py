"""One POST to a notification URL, and the outcome sorted into delivered, retry, or give up.

Shared by the webhook and the Slack notifier. One attempt only: the engine retries, so a
notifier that retried too would multiply the attempts and hold up its channel's queue.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import ClassVar

import httpx

from canaryguard.domain.errors import DeliveryFailed, InvalidInput

__all__ = ["HttpNotifier", "deliver", "parse_http_url", "shown_url"]

# answers that say "not now" rather than "not this": worth another attempt
_RETRYABLE = frozenset({408, 425, 429})
_SNIPPET_BYTES = 200  # of a refusal's body, for the message: enough for Slack's "no_service"
_SNIPPET_SECONDS = 1.0


def parse_http_url(url: str) -> httpx.URL:
    """``url`` parsed, or ``ValueError`` saying what is wrong (without repeating the URL,
    which may hold a secret)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parsed.host:
        raise ValueError("has no host")
    return parsed


def shown_url(url: httpx.URL) -> str:
    """``url`` fit for messages and the API: its scheme and host only. The rest may be the
    credential (a Slack incoming webhook's path, a token in a receiver's path or query)."""
    return f"{url.scheme}://{url.host}{'' if url.port is None else f':{url.port}'}/..."


async def deliver(
    client: httpx.AsyncClient,
    url: httpx.URL,
    *,
    channel: str,
    shown: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - applied here with asyncio.timeout, and named in messages
) -> None:
    """POST ``content`` once; return when the receiver took it (2xx), else raise
    ``DeliveryFailed`` naming ``channel`` and ``shown`` (``permanent`` unless trying again
    can help)."""
    try:
        # httpx's timeout bounds each phase; this bounds the whole attempt (a slow-drip answer)
        async with asyncio.timeout(timeout):
            async with client.stream("POST", url, content=content, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return  # taken: a body slow to come after a 2xx is no reason to send again
                snippet = await _snippet(response)
    except (TimeoutError, httpx.TimeoutException):
        raise DeliveryFailed(f"{channel}: {shown} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        # from None: a chained httpx error carries the request, whose URL may be the secret
        reason = (str(exc) or type(exc).__name__).replace(str(url), shown)
        raise DeliveryFailed(f"{channel}: could not reach {shown}: {reason}") from None
    permanent = status not in _RETRYABLE and status < 500
    detail = f": {snippet}" if snippet else ""
    raise DeliveryFailed(
        f"{channel}: {shown} answered {status} {response.reason_phrase}{detail}".rstrip(),
        permanent=permanent,
        retry_after=None if permanent else _retry_after(response.headers.get("retry-after")),
    )


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` of delay-seconds; the HTTP-date form is rare from webhook receivers
    and is left to the usual backoff."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


async def _snippet(response: httpx.Response) -> str:
    # a refusal's body says why, but a receiver may answer with anything: read a little, and
    # not for long (the status alone decides what happens next)
    read = b""
    try:
        async with asyncio.timeout(_SNIPPET_SECONDS):
            async for chunk in response.aiter_bytes():
                read += chunk
                if len(read) >= _SNIPPET_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    text = read[:_SNIPPET_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())


class HttpNotifier:
    """What the webhook and Slack notifiers share: one URL, one client, one POST per send.

    Subclasses set ``_kind`` and ``_label`` (how messages name the channel). Redirects are not
    followed: an alert goes where it was configured to, or fails.
    """

    _kind: ClassVar[str]
    _label: ClassVar[str]

    def __init__(
        self, name: str, url: str, *, timeout: float, tls: ssl.SSLContext | None = None
    ) -> None:
        channel = f"{self._label} {name!r}"
        try:
            self._url = parse_http_url(url)
        except ValueError as exc:
            raise InvalidInput(f"{channel}: the url {exc}") from None
        if not timeout > 0:
            raise InvalidInput(f"{channel}: the timeout must be positive")
        self._name = name
        self._channel = channel
        self._timeout = timeout
        self._shown = shown_url(self._url)
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, verify=tls if tls is not None else True
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return self._kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, url={self._shown!r})"

    async def _post(self, content: bytes, headers: Mapping[str, str]) -> None:
        await deliver(
            self._client,
            self._url,
            channel=self._channel,
            shown=self._shown,
            content=content,
            headers=headers,
            timeout=self._timeout,
        )

    async def close(self) -> None:
        await self._client.aclose()
