"""The ``canaryguard`` Typer application."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from canaryguard.cli.walkthrough import run_walkthrough
from canaryguard.domain.errors import CanaryGuardError
from canaryguard.wiring import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="canaryguard",
    help="Roll out versioned policy configuration as canaries; roll back bad ones in seconds.",
    no_args_is_help=True,
    add_completion=False,
)

EXIT_ERROR = 1


@app.callback()
def _root() -> None:
    """canaryguard."""


@app.command()
def walkthrough(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="where the SQLite database and key file live")
    ] = Path(".canaryguard"),
    db: Annotated[
        str | None, typer.Option("--db", help="database URL (default: SQLite in --data-dir)")
    ] = None,
) -> None:
    """Publish two policy versions, start a canary, roll it back, and show the record."""
    console = Console()
    settings = Settings.from_env(data_dir=data_dir, db_url=db)
    try:
        asyncio.run(run_walkthrough(settings, console))
    except CanaryGuardError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from exc


def main() -> None:
    app()
