"""``replay`` (a stream through the monitor's judgement, offline) and ``record`` (live
observations of a deployment, in the replay format)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from canaryguard.cli.client import CliError
from canaryguard.cli.context import Context, ctx_of
from canaryguard.domain.assignment import Variant
from canaryguard.domain.conditions import STORED_CONTEXT
from canaryguard.domain.judge import history_span, run_start
from canaryguard.domain.models import Deployment, RollbackConfig, SnapshotInfo
from canaryguard.domain.replay import aggregate_line, has_canary_traffic, read_stream
from canaryguard.domain.replay import replay as run_replay
from canaryguard.domain.windows import SecondStats

__all__ = ["record", "replay"]


def _load_config(path: Path | None) -> RollbackConfig:
    if path is None:
        return RollbackConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
        return RollbackConfig.model_validate(data or {})
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start + 1})") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not JSON or YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"{path}: {problems}") from exc


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
        data = stream.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {stream}: {exc.strerror}") from exc
    try:
        seconds = read_stream(data)
    except ValueError as exc:
        raise CliError(f"{stream}: {exc}") from exc
    if not has_canary_traffic(seconds):
        # judging nothing would print "no rollback", which reads as a canary that passed
        raise CliError(f"no canary traffic in {stream}: nothing to judge")
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
    elif result.regression_t is not None:
        message = f"no rollback over {result.seconds} s of traffic: {result.reason}"
    else:
        message = f"no rollback over {result.seconds} s of traffic"
    out.result(result.as_json(), message)


def _run_start(context: Context, name: str) -> int:
    """The Unix second the deployment's canary run began, as the monitor reckons it: from the
    snapshot that began the run (a split change within the run moves the state's start)."""
    status = context.api.get(f"/deployments/{name}/status")
    try:
        # read back as the server stored it, like the store does: checked when it was saved
        deployment = Deployment.model_validate(status["deployment"], context=STORED_CONTEXT)
        begun = None
        if deployment.run_id is not None:
            snapshots = context.api.get(f"/deployments/{name}/snapshots")
            begun = next(
                (SnapshotInfo.model_validate(s) for s in snapshots if s["id"] == deployment.run_id),
                None,
            )
    except (ValidationError, KeyError, TypeError) as exc:
        raise CliError(f"the server's answer on {name} is not one this client reads") from exc
    started, _ = run_start(deployment, begun)
    return math.floor(started.timestamp())


def _stats(row: dict[str, Any]) -> SecondStats:
    """An observations row of the API as the monitor's second."""
    return SecondStats(
        requests=row["requests"],
        # errors read from Prometheus may run a scrape ahead of their requests
        errors=min(row["errors"], row["requests"]),
        latency_sum_ms=row["latency_sum_ms"],
        latency_max_ms=row["latency_max_ms"],
        histogram={int(bucket): count for bucket, count in row["histogram"].items()},
    )


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
    origin = _run_start(context, deployment)
    started, written = time.monotonic(), 0
    since = origin - history
    try:
        with out_file.open("w", encoding="utf-8") as out:
            while not seconds or time.monotonic() - started < seconds:
                rows = context.api.get(f"/deployments/{deployment}/observations", since=since)
                for row in rows:
                    since = max(since, row["second"] + 1)
                    variant = Variant(row["variant"])
                    if row["second"] < origin and variant is not Variant.STABLE:
                        continue  # before the canary started only stable's wobble matters
                    line = aggregate_line(row["second"] - origin, variant, _stats(row))
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
                    written += 1
                out.flush()
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise CliError(f"cannot write {out_file}: {exc.strerror}") from exc
    context.out.result(
        {"lines": written, "file": str(out_file)}, f"wrote {written} lines to {out_file}"
    )
