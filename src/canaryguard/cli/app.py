"""The ``canaryguard`` command line: ``serve`` runs the server; every other command talks to it
over HTTP (``--server``/``CANARYGUARD_URL``, ``--token``/``CANARYGUARD_TOKEN``).

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict, 4 not allowed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canaryguard.cli import (
    commands_admin,
    commands_deploy,
    commands_policy,
    commands_records,
    commands_replay,
    commands_rollback,
)
from canaryguard.cli.client import DEFAULT_URL, ApiClient, CliError, default_token
from canaryguard.cli.context import Context, ctx_of
from canaryguard.cli.output import Out
from canaryguard.domain.errors import CanaryGuardError

__all__ = ["app", "main"]

DEFAULT_DATA_DIR = Path(
    ".canaryguard"
)  # the same default as canaryguard.wiring, without its imports

EPILOG = "Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (stale revision or state), 4 not allowed."

app = typer.Typer(
    name="canaryguard",
    help="Roll out versioned policy configuration as canaries; roll back bad ones in seconds.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(commands_policy.app, name="policy")
app.add_typer(commands_deploy.app, name="deploy")
app.add_typer(commands_records.snapshot_app, name="snapshot")
app.add_typer(commands_records.audit_app, name="audit")
app.add_typer(commands_admin.config_app, name="config")
app.add_typer(commands_admin.token_app, name="token")
app.add_typer(commands_admin.keys_app, name="keys")
app.command("notifications")(commands_admin.notifications)
app.command("status")(commands_deploy.status)
app.command("rollback")(commands_rollback.rollback)
app.command("events")(commands_records.events)
app.command("replay")(commands_replay.replay)
app.command("record")(commands_replay.record)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="SQLite database, key file and admin token (default ./.canaryguard)"
    ),
]


def _data_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("CANARYGUARD_DATA_DIR") or DEFAULT_DATA_DIR)


@app.callback()
def _root(
    ctx: typer.Context,
    server: Annotated[
        str, typer.Option("--server", envvar="CANARYGUARD_URL", help="canaryguard URL")
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="API token (default: CANARYGUARD_TOKEN, or the local admin-token file)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
    data_dir: DataDir = None,
) -> None:
    ctx.obj = Context(
        api=ApiClient(base_url=server, token=token or default_token(_data_dir(data_dir))),
        out=Out(as_json=as_json),
        data_dir=data_dir,
    )


@app.command()
def serve(  # noqa: PLR0917 - Typer passes the options by name
    ctx: typer.Context,
    data_dir: DataDir = None,
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="CANARYGUARD_DB", help="database URL (default SQLite)"),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65_535)] = 8000,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus",
            envvar="CANARYGUARD_PROMETHEUS_URL",
            help="a Prometheus to read outcomes from, for deployments whose `prometheus` "
            "setting names their series (docs/operations.md)",
        ),
    ] = None,
    notifications: Annotated[
        Path | None,
        typer.Option(
            "--notifications",
            envvar="CANARYGUARD_NOTIFICATIONS",
            help="a TOML file of alert channels: webhooks, Slack, email (docs/operations.md)",
        ),
    ] = None,
) -> None:
    """Run the controller, the REST API, the event stream and the dashboard (at /)."""
    # imported here: the server stack is only needed by `serve`, and the other commands start fast
    from canaryguard.api.server import serve as run_server  # noqa: PLC0415
    from canaryguard.wiring import Settings  # noqa: PLC0415

    settings = Settings.from_env(
        data_dir=_data_dir(data_dir or ctx_of(ctx).data_dir),
        db_url=db,
        prometheus_url=prometheus,
        notifications_file=notifications,
    )
    console = Console()
    try:
        asyncio.run(run_server(settings, host=host, port=port, announce=console.print))
    except (CanaryGuardError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:  # the database server cannot be reached, the data dir cannot be written
        raise CliError(f"cannot start: {exc}") from exc
    except SystemExit as exc:  # uvicorn exits 3 when it cannot listen; 3 means "conflict" here
        if exc.code not in (0, None):
            raise CliError(f"could not serve on {host}:{port} (see the log above)") from exc
    except KeyboardInterrupt:
        return


@app.command()
def walkthrough(
    ctx: typer.Context,
    data_dir: DataDir = None,
    db: Annotated[
        str | None, typer.Option("--db", help="database URL (default: SQLite in --data-dir)")
    ] = None,
) -> None:
    """Library walkthrough, no server: publish, canary, roll back, show the record."""
    from canaryguard.cli.walkthrough import run_walkthrough  # noqa: PLC0415
    from canaryguard.wiring import Settings  # noqa: PLC0415

    settings = Settings.from_env(data_dir=_data_dir(data_dir or ctx_of(ctx).data_dir), db_url=db)
    try:
        asyncio.run(run_walkthrough(settings, Console()))
    except CanaryGuardError as exc:
        raise CliError(str(exc)) from exc


@app.command()
def demo(  # noqa: PLR0917 - Typer passes the options by name
    ctx: typer.Context,
    data_dir: DataDir = None,
    duration: Annotated[
        float, typer.Option("--duration", min=20, max=3_600, help="seconds the demo runs")
    ] = 90.0,
    fleet: Annotated[int, typer.Option("--fleet", min=1, max=16, help="client processes")] = 2,
    rate: Annotated[
        int, typer.Option("--rate", min=10, max=5_000, help="requests a second per process")
    ] = 300,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65_535)] = None,
) -> None:
    """Serve on SQLite, run a simulated fleet using the SDK, promote a good canary and watch the
    monitor roll back a bad one by itself, live; the data stays for `status` and `audit list`."""
    from canaryguard.cli.demo import run_demo  # noqa: PLC0415 - only this command needs it

    out = ctx_of(ctx).out
    directory = _data_dir(data_dir or ctx_of(ctx).data_dir)
    summary = run_demo(
        directory,
        duration=duration,
        fleet=fleet,
        rate=rate,
        port=port,
        console=out.console,
        live=not out.as_json,
    )
    if not out.as_json:
        out.console.print()
    lines = [
        f"promotions: {summary.promotions}",
        f"automatic rollbacks: {summary.automatic_rollbacks}"
        + (f" after {summary.seconds_to_rollback:g} s" if summary.seconds_to_rollback else ""),
    ]
    if summary.rollback_reason:
        lines.append(f"why: {summary.rollback_reason}")
    lines += [
        f"requests reported in the last window: {summary.requests_reported:,}",
        f"inspect: canaryguard serve --data-dir {directory} (then, with CANARYGUARD_URL set: "
        f"canaryguard status {summary.deployment}, snapshot list {summary.deployment}, "
        "audit list)",
    ]
    out.result(summary.as_json(), "\n".join(lines))


def main() -> None:
    """Entry point. Click handles usage errors itself (exit 2); known failures become one line
    on stderr and their exit code, never a traceback."""
    try:
        app()
    except CliError as exc:
        Out().error(str(exc))
        raise SystemExit(exc.code) from None
