"""The CLI's HTTP client: one place that turns server answers into exit codes and messages.

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (stale revision, illegal state), 4 not allowed
(no, bad or insufficient token).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
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
        return path.read_text().strip() or None
    except OSError:
        return None


def _code_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_NOT_ALLOWED
    if status in (409, 412):
        return EXIT_CONFLICT
    return EXIT_ERROR


@dataclass
class ApiClient:
    base_url: str
    token: str | None
    timeout: float = 30.0

    def _client(self, timeout: float | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(
            base_url=self.base_url.rstrip("/"), headers=headers, timeout=timeout or self.timeout
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request under /api/v1; return the decoded JSON body (None for 204)."""
        try:
            with self._client() as client:
                response = client.request(method, f"/api/v1{path}", **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach canaryguard at {self.base_url}: is `canaryguard serve` running? "
                "(set --server or CANARYGUARD_URL)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"canaryguard at {self.base_url} did not answer in time") from exc
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        if response.is_success:
            return response.json()
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title") or response.reason_phrase
        except ValueError:
            detail = response.text[:200] or response.reason_phrase
        if response.status_code == 401 and not self.token:
            detail = f"{detail}; pass --token or set CANARYGUARD_TOKEN"
        raise CliError(f"{detail} (HTTP {response.status_code})", _code_for(response.status_code))

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
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            params = {"deployment": deployment} if deployment else {}
            try:
                with (
                    self._client(timeout=None) as client,
                    client.stream(
                        "GET", "/api/v1/events", headers=headers, params=params
                    ) as response,
                ):
                    if not response.is_success:
                        response.read()
                        self._decode(response)
                    failures = 0
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line.startswith("id:"):
                            last = int(line[3:].strip())
                        elif not line and data:
                            yield json.loads("\n".join(data))
                            data = []
            except httpx.ConnectError as exc:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise CliError(
                        f"lost canaryguard at {self.base_url}; gave up reconnecting"
                    ) from exc
                time.sleep(min(0.5 * 2**failures, 5.0))
            except (httpx.RemoteProtocolError, httpx.ReadError):
                continue  # the server closed the stream: resume after the last event seen
