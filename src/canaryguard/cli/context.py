"""What every command gets from the global options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from canaryguard.cli.client import ApiClient
from canaryguard.cli.output import Out

__all__ = ["Context", "ctx_of"]


@dataclass
class Context:
    api: ApiClient
    out: Out
    data_dir: Path | None = None  # the global --data-dir, when given


def ctx_of(ctx: typer.Context) -> Context:
    state = ctx.find_root().obj
    if not isinstance(state, Context):
        raise TypeError("the root command did not set up the context")
    return state
