"""Debian's Prometheus on a free loopback port, scraping an exporter the test controls.

When the ``prometheus`` binary is missing the tests that need it are skipped with the reason,
unless ``CANARYGUARD_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs it), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from tests.servers import free_port

REQUIRE_SERVICES = os.environ.get("CANARYGUARD_REQUIRE_SERVICES") == "1"
BINARY = os.environ.get("CANARYGUARD_TEST_PROMETHEUS", "prometheus")


def require_prometheus() -> str:
    """The path of the prometheus binary, or skip (fail in CI) saying why."""
    path = shutil.which(BINARY)
    if path is not None:
        return path
    problem = f"no {BINARY!r} binary on PATH (Debian: apt-get install prometheus)"
    if REQUIRE_SERVICES:
        pytest.fail(f"CANARYGUARD_REQUIRE_SERVICES=1 but {problem}")
    pytest.skip(f"SKIPPING PROMETHEUS TEST: {problem}")


@dataclass
class Exporter:
    """A /metrics endpoint on loopback serving ``registry``."""

    registry: CollectorRegistry
    target: str  # host:port


@contextmanager
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(registry=registry, target=f"127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class RunningPrometheus:
    url: str

    def query(self, query: str) -> list[dict[str, object]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5).json()
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def wait_for(self, query: str, done: Callable[[list[dict[str, object]]], bool]) -> None:
        """Until ``done`` holds of ``query``'s answer (a scrape or two: seconds)."""
        deadline = time.monotonic() + 30
        while not done(self.query(query)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus never answered {query!r} as expected")
            time.sleep(0.2)

    def wait_for_value(self, query: str, value: float) -> None:
        """Until the single series ``query`` selects has ``value`` as its last sample."""
        self.wait_for(
            query,
            lambda result: len(result) == 1 and float(result[0]["value"][1]) == value,  # type: ignore[index]
        )


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[RunningPrometheus]:
    """Prometheus scraping ``target`` every second."""
    binary = require_prometheus()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        f"    static_configs:\n      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "Prometheus did not start: "
                    + (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        yield RunningPrometheus(url=url)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
