"""Printing: JSON for scripts (``--json``), Rich tables and lines for people."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["Out", "when"]


def when(iso: str | None) -> str:
    """``2026-11-26T03:35:39.745155Z`` -> ``2026-11-26 03:35:39`` (UTC) for tables."""
    return iso[:19].replace("T", " ") if iso else ""


@dataclass
class Out:
    as_json: bool = False
    console: Console = field(default_factory=Console)
    errors: Console = field(default_factory=lambda: Console(stderr=True))

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False, default=str))

    def result(self, value: Any, message: str) -> None:
        """``value`` as JSON with --json, else ``message`` for people."""
        if self.as_json:
            self.json(value)
        else:
            self.console.print(message, highlight=False)

    def table(
        self, value: Any, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        if self.as_json:
            self.json(value)
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            # Text, not markup: cells hold names, reasons and receivers' answers, where a "[" is
            # data (a "[/x]" would otherwise stop the command, a "[link=…]" plant a link)
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
        self.console.print(table)

    def error(self, message: str) -> None:
        # the message may quote the server or the user (a name, a CEL expression): text, not
        # markup, so "[/x]" is shown as it is rather than failing or vanishing
        self.errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
