"""``replay`` (a stream through the monitor's judgement, offline) and ``record`` (live
observations of a deployment, in the replay format)."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from canaryguard.cli.client import CliError
from canaryguard.cli.context import ctx_of
from canaryguard.domain.histogram import GROWTH
from canaryguard.domain.judge import history_span
from canaryguard.domain.models import RollbackConfig
from canaryguard.domain.replay import parse_stream
from canaryguard.domain.replay import replay as run_replay

__all__ = ["record", "replay"]


def _load_config(path: Path | None) -> RollbackConfig:
    if path is None:
        return RollbackConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
        return RollbackConfig.model_validate(data or {})
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not JSON or YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"{path}: {problems}") from exc


def _lines(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CliError(f"{path} line {number} is not JSON: {exc.msg}") from exc
    return lines


def replay(
    ctx: typer.Context,
    stream: Annotated[Path, typer.Argument(help="JSON lines: requests or per-second aggregates")],
    config: Annotated[
        Path | None, typer.Option("--config", help="rollback config (JSON or YAML object)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """When (simulated second) and why the monitor would roll back on STREAM; nothing is sent
    anywhere. Lines: {"t", "variant", "ok", "latency_ms"} or {"t", "variant", "requests",
    "errors", "latency_ms": [samples]} with t in seconds since the canary started (stable's
    lines before it, with a negative t, are the history the detector learns from)."""
    settings = _load_config(config)
    try:
        seconds = parse_stream(_lines(stream))
    except ValueError as exc:
        raise CliError(f"{stream}: {exc}") from exc
    from canaryguard.wiring import load_extensions  # noqa: PLC0415 - the server stack: only here

    notices: list[str] = []
    result = run_replay(seconds, settings, extensions=load_extensions(notices))
    for notice in notices:
        ctx_of(ctx).out.error(notice)
    out = ctx_of(ctx).out
    if as_json:
        out.json(result.as_json())
        return
    if result.rolled_back:
        message = f"rolled back at t={result.decision_t:g} s ({result.condition}): {result.reason}"
    else:
        message = f"no rollback over {result.seconds} s of traffic"
    out.result(result.as_json(), message)


def _samples(histogram: dict[str, int]) -> list[float]:
    """A histogram written out as samples at each bucket's geometric middle."""
    samples: list[float] = []
    for bucket, count in sorted(histogram.items(), key=lambda item: int(item[0])):
        middle = 0.5 if int(bucket) == 0 else GROWTH ** (int(bucket) + 0.5)
        samples += [round(middle, 3)] * count
    return samples


def record(
    ctx: typer.Context,
    deployment: Annotated[str, typer.Argument()],
    out_file: Annotated[Path, typer.Option("--out", help="JSON lines file to write")],
    seconds: Annotated[
        int, typer.Option("--seconds", min=0, help="stop after this many seconds (0: Ctrl-C)")
    ] = 0,
    history: Annotated[
        int,
        typer.Option(
            "--history",
            min=0,
            max=3_600,
            help="seconds of stable's traffic before the canary started to write (negative t): "
            "replay learns stable's wobble from the last history_seconds of them and chooses an "
            "unset dispersion block from the last hour",
        ),
    ] = history_span(RollbackConfig()),
) -> None:
    """Write DEPLOYMENT's live observations as per-second aggregate lines (the replay format),
    with t counted from when its canary started: everything the server still holds since then
    (up to an hour), stable's last --history seconds before it, and then each new second."""
    context = ctx_of(ctx)
    status = context.api.get(f"/deployments/{deployment}/status")
    origin = math.floor(_timestamp(status["deployment"]["state_since"]))
    started, written = time.monotonic(), 0
    since = origin - history
    try:
        with out_file.open("w", encoding="utf-8") as out:
            while not seconds or time.monotonic() - started < seconds:
                rows = context.api.get(f"/deployments/{deployment}/observations", since=since)
                for row in rows:
                    since = max(since, row["second"] + 1)
                    if row["second"] < origin and row["variant"] != "stable":
                        continue  # before the canary started only stable's wobble matters
                    line = {
                        "t": row["second"] - origin,
                        "variant": row["variant"],
                        "requests": row["requests"],
                        # errors read from Prometheus may run a scrape ahead of their requests
                        "errors": min(row["errors"], row["requests"]),
                        "latency_ms": _samples(row["histogram"]),
                    }
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    written += 1
                out.flush()
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    context.out.result(
        {"lines": written, "file": str(out_file)}, f"wrote {written} lines to {out_file}"
    )


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
