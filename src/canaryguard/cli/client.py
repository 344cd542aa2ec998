"""The CLI's HTTP client: one place that turns server answers into exit codes and messages.

Exit codes: 0 ok, 1 error, 2 usage (a bad --server URL too), 3 conflict (stale revision, illegal
state), 4 not allowed (no, bad or insufficient token).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_NOT_ALLOWED",
    "EXIT_USAGE",
    "ApiClient",
    "CliError",
    "default_token",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_NOT_ALLOWED = 4
DEFAULT_URL = "http://127.0.0.1:8000"
RECONNECT_ATTEMPTS = 8
DEFAULT_RETRY_SECONDS = 1.0  # before reconnecting to a stream that ended, unless it says


class CliError(Exception):
    """A failure to show as one line, with the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def default_token(data_dir: Path) -> str | None:
    """``CANARYGUARD_TOKEN``, else the admin token a local ``serve`` wrote into its data dir."""
    token = os.environ.get("CANARYGUARD_TOKEN")
    if token:
        return token.strip()
    path = data_dir / "admin-token"
    try:
        # undecodable bytes become U+FFFD, which the token check then names (exit 4)
        return path.read_bytes().decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _code_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_NOT_ALLOWED
    if status in (409, 412):
        return EXIT_CONFLICT
    return EXIT_ERROR


def _check_server(url: str) -> None:
    """Refuse (exit 2) a server URL that httpx cannot send a request to, naming it."""
    where = "--server (or CANARYGUARD_URL)"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CliError(f"{where} is not a URL: {url!r} ({exc})", EXIT_USAGE) from None
    if parsed.scheme not in {"http", "https"}:
        if "://" not in url:  # "host:port" parses with the host as its scheme
            raise CliError(
                f"{where} {url!r} has no scheme: use http://{url} (or https://)", EXIT_USAGE
            )
        raise CliError(f"{where} must be an http:// or https:// URL, got {url!r}", EXIT_USAGE)
    if not parsed.host:
        raise CliError(f"{where} has no host: {url!r}", EXIT_USAGE)


def _check_token(token: str) -> None:
    """Refuse (exit 4) a token that cannot go into an HTTP header, without printing it."""
    for position, char in enumerate(token, start=1):
        if not " " <= char <= "~":
            raise CliError(
                f"the API token must be printable ASCII, but character {position} is {char!r} "
                "(check --token, CANARYGUARD_TOKEN or the admin-token file)",
                EXIT_NOT_ALLOWED,
            )


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` with its whitespace runs (newlines included) as single spaces, cut to ``limit``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit]}..."


def _retry_seconds(text: str, current: float) -> float:
    """An SSE ``retry:`` field (milliseconds) in seconds, kept within 0.1 to 60 s; a field that
    is not a number leaves ``current``, as the SSE specification says."""
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return current
    return min(max(int(text) / 1000, 0.1), 60.0)


@dataclass
class ApiClient:
    """The canaryguard REST API as the CLI uses it: every failure becomes a CliError."""

    base_url: str
    token: str | None
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep  # between reconnections of an event stream

    def _client(self, timeout: float | None = None) -> httpx.Client:
        # checked here, not at construction: commands that never call the server (serve,
        # replay, walkthrough) must not fail on a bad CANARYGUARD_URL
        _check_server(self.base_url)
        if self.token:
            _check_token(self.token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(
            base_url=self.base_url.rstrip("/"), headers=headers, timeout=timeout or self.timeout
        )

    def _transport_error(self, exc: httpx.RequestError) -> CliError:
        """The one-line error for a request that got no (usable) answer."""
        if isinstance(exc, httpx.ConnectError):
            return CliError(
                f"cannot reach canaryguard at {self.base_url}: is `canaryguard serve` running? "
                "(set --server or CANARYGUARD_URL)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"canaryguard at {self.base_url} did not answer in time")
        if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc):
            return CliError(
                f"canaryguard at {self.base_url} closed the connection without answering: "
                "is --server a canaryguard server?"
            )
        reason = _one_line(str(exc)) or type(exc).__name__
        return CliError(f"talking to canaryguard at {self.base_url} failed: {reason}")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request under /api/v1; return the decoded JSON body (None for 204)."""
        try:
            with self._client() as client:
                response = client.request(method, f"/api/v1{path}", **kwargs)
        except httpx.RequestError as exc:
            raise self._transport_error(exc) from exc
        return self._decode(response)

    def _not_canaryguard(self, response: httpx.Response, what: str) -> CliError:
        kind = response.headers.get("content-type", "no content type")
        return CliError(
            f"{self.base_url} answered HTTP {response.status_code} with {what} ({kind}): "
            "is --server a canaryguard server?"
        )

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
                raise self._not_canaryguard(response, "a body that is not JSON") from None
        detail = self._error_detail(response)
        if response.status_code == 401 and not self.token:
            detail = f"{detail}; pass --token or set CANARYGUARD_TOKEN"
        raise CliError(f"{detail} (HTTP {response.status_code})", _code_for(response.status_code))

    @staticmethod
    def _error_detail(response: httpx.Response) -> str:
        """canaryguard's problem detail; for any other body (a proxy's error page, JSON that
        is no problem object), the status phrase and the start of the body on one line."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("title")
            if isinstance(detail, str) and detail.strip():
                return _one_line(detail, limit=2000)
            if detail:
                return _one_line(json.dumps(detail), limit=2000)
        phrase = response.reason_phrase or "error"
        text = _one_line(response.text)
        return f"{phrase}: {text}" if text else phrase

    def _check_event_stream(self, response: httpx.Response) -> None:
        if not response.is_success:
            response.read()
            self._decode(response)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            # without this, a page that ends at once is fetched again and again, forever
            raise self._not_canaryguard(response, "something that is not an event stream")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def stream_events(
        self, *, deployment: str | None, after: int | None
    ) -> Iterator[dict[str, Any]]:
        """Yield events from the SSE stream; reconnect with Last-Event-ID when it drops."""
        last = after
        failures = 0
        retry = DEFAULT_RETRY_SECONDS
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            params = {"deployment": deployment} if deployment else {}
            streaming = False
            got = False  # an event on this connection
            try:
                with (
                    self._client(timeout=None) as client,
                    client.stream(
                        "GET", "/api/v1/events", headers=headers, params=params
                    ) as response,
                ):
                    self._check_event_stream(response)
                    streaming = True
                    failures = 0
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line.startswith("id:"):
                            last = self._event_id(line[3:].strip())
                        elif line.startswith("retry:"):
                            retry = _retry_seconds(line[6:].strip(), retry)
                        elif not line and data:
                            got = True
                            yield self._event("\n".join(data))
                            data = []
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if not streaming:
                    failures = self._wait_to_reconnect(failures, exc)
                    continue
            except (httpx.NetworkError, httpx.TimeoutException) as exc:
                failures = self._wait_to_reconnect(failures, exc)
                continue
            except httpx.RequestError as exc:
                raise self._transport_error(exc) from exc
            # the stream ended (the server closed it): resume after the last event seen, at
            # once when it brought events, else after the server's retry (a server that ends
            # every stream at once is not asked again and again without a pause)
            if not got:
                self.sleep(retry)

    def _wait_to_reconnect(self, failures: int, exc: httpx.RequestError) -> int:
        """Sleep before the next try (longer after each failure); CliError after the last."""
        failures += 1
        if failures > RECONNECT_ATTEMPTS:
            reason = self._transport_error(exc)
            raise CliError(
                f"lost canaryguard at {self.base_url}; gave up reconnecting ({reason})"
            ) from exc
        self.sleep(min(0.5 * 2**failures, 5.0))
        return failures

    def _event_id(self, text: str) -> int:
        if not text.isascii() or not text.isdigit():
            raise CliError(
                f"the event stream from {self.base_url} sent an event id that is not a number: "
                f"{text!r}"
            )
        return int(text)

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise CliError(
                f"the event stream from {self.base_url} sent an event that is not a JSON "
                f"object: {_one_line(data)}"
            )
        return event
