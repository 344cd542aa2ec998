"""A real canaryguard server (uvicorn on loopback) in a background thread, for API and CLI tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from canaryguard.api.app import create_app
from canaryguard.api.server import prepare
from canaryguard.wiring import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    url: str
    admin_token: str
    settings: Settings
    messages: list[str]
    process: subprocess.Popen[bytes] | None = None  # with server_process: to kill it
    app: FastAPI | None = None  # with running_server: the app and the loop it runs on
    loop: asyncio.AbstractEventLoop | None = None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@contextmanager
def running_server(
    data_dir: Path,
    db_url: str | None = None,
    *,
    heartbeat_seconds: float = 15.0,
    prometheus_url: str | None = None,
    notifications_file: Path | None = None,
) -> Iterator[RunningServer]:
    """Start ``canaryguard serve`` (the same preparation and app) on a free loopback port."""
    settings = Settings(
        data_dir=data_dir,
        db_url=db_url,
        prometheus_url=prometheus_url,
        notifications_file=notifications_file,
    )
    port = free_port()
    messages: list[str] = []
    started = threading.Event()
    holder: dict[str, object] = {}

    async def main() -> None:
        guard = await prepare(settings, messages.append)
        try:
            app = create_app(guard, heartbeat_seconds=heartbeat_seconds)
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
            )
            server = uvicorn.Server(config)
            holder["server"] = server
            holder["loop"] = asyncio.get_running_loop()
            holder["app"] = app
            started.set()
            await server.serve()
        finally:
            await guard.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name=f"canaryguard-{port}", daemon=True)
    thread.start()
    started.wait(30)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while "error" not in holder:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("canaryguard did not become ready")
        time.sleep(0.05)
    failure = holder.get("error")
    if isinstance(failure, BaseException):
        raise RuntimeError("the server failed to start") from failure  # noqa: TRY004 - not a type check
    token = (data_dir / "admin-token").read_text().strip()
    app, loop = holder["app"], holder["loop"]
    assert isinstance(app, FastAPI)
    assert isinstance(loop, asyncio.AbstractEventLoop)
    try:
        yield RunningServer(
            url=url, admin_token=token, settings=settings, messages=messages, app=app, loop=loop
        )
    finally:
        server = holder["server"]
        assert isinstance(server, uvicorn.Server)
        loop.call_soon_threadsafe(app.state.shutdown.set)  # end open event streams, as serve does
        server.should_exit = True
        thread.join(30)


@contextmanager
def server_process(data_dir: Path, db_url: str | None = None) -> Iterator[RunningServer]:
    """``canaryguard serve`` in a process of its own (no GIL shared with a busy test)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYGUARD_")}
    command = [
        sys.executable,
        "-m",
        "canaryguard",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    if db_url is not None:
        command += ["--db", db_url]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("canaryguard serve did not start")
            time.sleep(0.05)
        token = (data_dir / "admin-token").read_text().strip()
        yield RunningServer(
            url=url,
            admin_token=token,
            settings=Settings(data_dir=data_dir),
            messages=[],
            process=process,
        )
    finally:
        if process.poll() is None:  # not killed by the test
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
