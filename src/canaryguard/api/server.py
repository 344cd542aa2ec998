"""``canaryguard serve``: open the store, make sure an admin can get in, run uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from canaryguard.api.app import create_app
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard

__all__ = ["ADMIN_TOKEN_ENV", "admin_token_path", "serve"]

ADMIN_TOKEN_ENV = "CANARYGUARD_ADMIN_TOKEN"  # noqa: S105 - the variable name, not a secret


def admin_token_path(settings: Settings) -> Path:
    return settings.data_dir / "admin-token"


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")


async def prepare(settings: Settings, announce: Callable[[str], None]) -> CanaryGuard:
    """Open canaryguard and bootstrap the admin token (shown once, kept in a 0600 file)."""
    guard = await open_canaryguard(settings)
    try:
        for notice in guard.notices:
            announce(notice)
        secret = await guard.tokens.bootstrap_admin(preset=os.environ.get(ADMIN_TOKEN_ENV) or None)
        if secret is not None:
            path = admin_token_path(settings)
            await asyncio.to_thread(_write_secret, path, secret)
            announce(f"created the admin token (shown once; also in {path}, mode 0600): {secret}")
    except BaseException:
        await guard.close()
        raise
    return guard


class _Server(uvicorn.Server):
    """uvicorn, but a stop signal first ends the live event streams, so shutdown is prompt."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config)
        self._app = app
        self._loop = loop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._loop.call_soon_threadsafe(self._app.state.shutdown.set)
        super().handle_exit(sig, frame)


async def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    heartbeat_seconds: float = 15.0,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the controller and API until a stop signal; work in progress is committed or not
    started, never half-applied, because every change is one transaction."""
    guard = await prepare(settings, announce)
    try:
        app = create_app(guard, heartbeat_seconds=heartbeat_seconds)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="info", lifespan="on", timeout_graceful_shutdown=10
        )
        announce(f"canaryguard serving on http://{host}:{port} (database: {_describe(settings)})")
        announce(f"dashboard: http://{host}:{port}/ (sign in with an API token)")
        await _Server(config, app, asyncio.get_running_loop()).serve()
    finally:
        await guard.close()


def _describe(settings: Settings) -> str:
    if settings.db_url is None:
        return f"SQLite in {settings.data_dir}"
    return settings.db_url.split("://", 1)[0]
