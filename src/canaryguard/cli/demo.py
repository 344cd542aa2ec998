"""``canaryguard demo``: the whole loop on one machine, on the embedded default (SQLite).

It starts ``canaryguard serve`` on loopback, a simulated fleet of client processes that use the
SDK (``canaryguard.client``) to assign every request locally and report its outcome, then rolls
out a good canary, which is promoted, and a bad one, which the monitor rolls back by itself. The
terminal shows it live (split, error rates, verdict, events); at the end, a summary. The data
stays in the data directory for ``canaryguard serve`` + ``status``, ``snapshot list`` and
``audit list``.

The fleet's "application" reads how to behave from the policy it is served (``demo`` section:
error rate and latency factor), so a bad policy version makes the requests that get it fail,
as a bad configuration would.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from canaryguard.cli.client import ApiClient, CliError

__all__ = ["DemoSummary", "run_demo"]

DEPLOYMENT = "demo/payments-security"
POLICY = "demo-payments-security"
BASE_DOCUMENT: dict[str, Any] = {
    "security": {
        "tls": {"min_version": "1.2"},
        "rate_limiting": {"requests_per_minute": 1200, "burst": 200},
    },
    "authentication": {"methods": ["oauth2", "api_key"], "session_timeout_minutes": 60},
}
VERSIONS = {
    # what each version does to the requests that get it (the fleet's simulated application)
    "stable": {"error_rate": 0.01, "latency_factor": 1.0},
    "good": {"error_rate": 0.01, "latency_factor": 1.0},
    "bad": {"error_rate": 0.05, "latency_factor": 1.3},
}
CONFIG = {
    "alpha": 0.001,  # the demo's good canary must never be rolled back by chance
    "error_rate_threshold": 0.1,  # the fixed line stays out of the way: the detector decides
    "evaluation_window_minutes": 1,
    "min_requests": 100,
}


@dataclass
class DemoSummary:
    """What happened, for the final screen (and ``--json``)."""

    deployment: str = DEPLOYMENT
    server: str = ""
    promotions: int = 0
    automatic_rollbacks: int = 0
    rollback_reason: str = ""
    seconds_to_rollback: float | None = None
    requests_reported: int = 0
    events: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "promotions": self.promotions,
            "automatic_rollbacks": self.automatic_rollbacks,
            "rollback_reason": self.rollback_reason,
            "seconds_to_rollback": self.seconds_to_rollback,
            "requests_reported": self.requests_reported,
        }


def _document(kind: str) -> dict[str, Any]:
    document = {**BASE_DOCUMENT, "demo": VERSIONS[kind]}
    if kind != "stable":  # a different document: a new version
        document["security"] = {**BASE_DOCUMENT["security"], "release": kind}
    return document


def fleet_member(  # noqa: PLR0917 - a process target takes positional arguments
    url: str, token: str, name: str, seed: int, rate: int, stop: EventType
) -> None:
    """One application process: ``rate`` requests a second, each assigned by the SDK and its
    outcome reported (runs in a child process)."""
    from canaryguard.client import Client  # noqa: PLC0415 - imported in the child process

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the fleet
    rng = random.Random(seed)
    with Client(url, token, [name], flush_interval=1.0) as client:
        while not stop.is_set():
            started = time.monotonic()
            for _ in range(max(rate // 10, 1)):
                assignment = client.assign(name, user_id=f"user-{rng.randrange(1_000_000)}")
                behaviour = assignment.document.get("demo", {})
                ok = rng.random() >= float(behaviour.get("error_rate", 0.01))
                latency = rng.lognormvariate(math.log(40.0), 0.4) * float(
                    behaviour.get("latency_factor", 1.0)
                )
                client.record(assignment, ok=ok, latency_ms=latency)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(data_dir: Path, port: int) -> Iterator[tuple[str, str]]:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # keys and tokens live here
    env = {k: v for k, v in os.environ.items() if k not in {"CANARYGUARD_DB", "CANARYGUARD_URL"}}
    log = (data_dir / "demo-server.log").open("ab")
    command = [sys.executable, "-m", "canaryguard", "serve", "--data-dir", str(data_dir)]
    process = subprocess.Popen(  # noqa: S603 - this interpreter, our own arguments
        [*command, "--port", str(port)], stdout=log, stderr=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1, trust_env=False).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise CliError(f"the demo server did not start; see {data_dir / 'demo-server.log'}")
            time.sleep(0.1)
        token = os.environ.get("CANARYGUARD_ADMIN_TOKEN") or (
            (data_dir / "admin-token").read_text().strip()
        )
        yield url, token
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _publish(api: ApiClient, kind: str) -> str:
    published = api.post(f"/policies/{POLICY}/versions", {"document": _document(kind)})
    return f"{POLICY}@{published['version']}"


def _prepare(api: ApiClient) -> tuple[str, dict[str, str]]:
    """The policy versions, and a fresh deployment (each run has its own: an earlier run's
    record stays as it ended)."""
    refs = {kind: _publish(api, kind) for kind in VERSIONS}
    existing = {d["name"] for d in api.get("/deployments")}
    name = DEPLOYMENT
    for run in range(2, 10_000):
        if name not in existing:
            break
        name = f"{DEPLOYMENT}-{run}"
    api.post("/deployments", {"name": name, "stable": refs["stable"]})
    api.request("PATCH", f"/deployments/{name}/config", json={"changes": CONFIG})
    return name, refs


class Screen:
    """The live view: state, split, both sides' error rates, verdict and the latest events."""

    def __init__(self, api: ApiClient, summary: DemoSummary) -> None:
        self._api = api
        self._summary = summary
        self.name = summary.deployment
        self._after = max((int(e["id"]) for e in api.get("/events/log", limit=10_000)), default=0)
        self.phase = "starting"

    def poll_events(self) -> list[dict[str, Any]]:
        new = self._api.get("/events/log", deployment=self.name, after=self._after, limit=100)
        for event in new:
            self._after = max(self._after, int(event["id"]))
            self._summary.events.append(_describe(event))
        return list(new)

    def render(self) -> Group:
        status = self._api.get(f"/deployments/{self.name}/status")
        verdict = self._api.get(f"/deployments/{self.name}/verdict")
        d, m = status["deployment"], status["metrics"]
        head = Table.grid(padding=(0, 2))
        head.add_row("phase", f"[bold]{self.phase}[/bold]")
        canary = d.get("canary")
        head.add_row(
            "deployment",
            f"{d['name']} revision {d['revision']}: {d['state']}, stable "
            f"{d['stable']['version']}"
            + (f", canary {canary['version']} on {status['canary_percent']:g} %" if canary else ""),
        )
        head.add_row(
            "verdict",
            verdict["verdict"] + (f" ({verdict['condition']})" if verdict.get("condition") else ""),
        )
        rates = Table(title=f"last {m['window_seconds'] / 60:g} min", title_justify="left")
        for column in ("variant", "requests", "errors", "error rate", "p99 ms"):
            rates.add_column(column)
        for variant in ("stable", "canary"):
            v = m[variant]
            rate = v["errors"] / v["requests"] if v["requests"] else 0.0
            rates.add_row(
                variant,
                f"{v['requests']:,}",
                f"{v['errors']:,}",
                f"{rate:.2%}",
                f"{v['p99_ms']:.0f}",
            )
        events = Table(title="events", title_justify="left", show_header=False)
        for line in self._summary.events[-6:]:
            events.add_row(line)
        return Group(head, rates, events)


def _describe(event: dict[str, Any]) -> str:
    kind = event["type"].removeprefix("io.canaryguard.")
    data = event.get("data") or {}
    detail = data.get("reason") or data.get("canary") or data.get("stable") or ""
    if isinstance(detail, dict):
        detail = f"{detail.get('name')}@{detail.get('version')}"
    return f"#{event['id']} {kind} {str(detail)[:110]}".strip()


def _state(api: ApiClient, name: str) -> str:
    state: str = api.get(f"/deployments/{name}")["state"]
    return state


def run_demo(
    data_dir: Path,
    *,
    duration: float = 90.0,
    fleet: int = 2,
    rate: int = 300,
    port: int | None = None,
    console: Console | None = None,
    live: bool = True,
) -> DemoSummary:
    """Run the demo (see the module docstring) and return its summary."""
    console = console or Console()
    summary = DemoSummary()
    deadline = time.monotonic() + duration
    good_until = time.monotonic() + duration * 0.4
    with _server(data_dir, port or _free_port()) as (url, admin):
        summary.server = url
        api = ApiClient(url, admin)
        summary.deployment, refs = _prepare(api)
        reporter = api.post(
            "/tokens", {"name": f"demo-fleet-{os.getpid()}-{int(time.time())}", "role": "reporter"}
        )["token"]
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        members = [
            context.Process(
                target=fleet_member,
                args=(url, reporter, summary.deployment, seed, rate, stop),
            )
            for seed in range(fleet)
        ]
        for member in members:
            member.start()
        screen = Screen(api, summary)
        view = Live(console=console, refresh_per_second=4, transient=False) if live else None
        try:
            with view or contextlib.nullcontext():
                _rollout(
                    api,
                    refs=refs,
                    screen=screen,
                    view=view,
                    summary=summary,
                    good_until=good_until,
                    deadline=deadline,
                )
        except KeyboardInterrupt:
            console.print("interrupted: stopping the fleet and the server")
        finally:
            stop.set()
            for member in members:
                member.join(10)
                if member.is_alive():
                    member.terminate()
            with contextlib.suppress(CliError):
                screen.poll_events()
                metrics = api.get(f"/deployments/{summary.deployment}/status")["metrics"]
                summary.requests_reported = (
                    metrics["stable"]["requests"] + metrics["canary"]["requests"]
                )
    return summary


def _rollout(
    api: ApiClient,
    *,
    refs: dict[str, str],
    screen: Screen,
    view: Live | None,
    summary: DemoSummary,
    good_until: float,
    deadline: float,
) -> None:
    def show() -> None:
        for event in screen.poll_events():
            if event["type"] == "io.canaryguard.canary.promoted":
                summary.promotions += 1
            if event["type"] == "io.canaryguard.rollback.auto_triggered":
                summary.automatic_rollbacks += 1
                summary.rollback_reason = event["data"].get("reason", "")
        if view is not None:
            view.update(screen.render())

    name = summary.deployment
    time.sleep(2)  # the fleet connects and reports on stable
    screen.phase = "good canary (10 %): watched, then promoted"
    api.post(f"/deployments/{name}/canary", {"policy": refs["good"], "percent": 10})
    while time.monotonic() < good_until:
        show()
        time.sleep(0.5)
    if _state(api, name) == "canary_active":
        api.post(f"/deployments/{name}/promote", {})
    screen.phase = "bad canary (10 %): the monitor should roll it back by itself"
    api.post(f"/deployments/{name}/canary", {"policy": refs["bad"], "percent": 10})
    bad_started = time.monotonic()
    while time.monotonic() < deadline:
        show()
        if summary.automatic_rollbacks and summary.seconds_to_rollback is None:
            summary.seconds_to_rollback = round(time.monotonic() - bad_started, 1)
            screen.phase = "bad canary rolled back automatically; every client is back on stable"
            deadline = min(deadline, time.monotonic() + 3)  # show the aftermath, then end
        time.sleep(0.5)
    show()
