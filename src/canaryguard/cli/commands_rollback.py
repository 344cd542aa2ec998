"""``canaryguard rollback``: roll back (at once, in stages, or after a confirmation), confirm,
cancel or escalate a rollback, and list and show rollbacks with their timeline."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from canaryguard.cli.client import EXIT_ERROR, EXIT_USAGE, CliError
from canaryguard.cli.context import Context, ctx_of
from canaryguard.cli.output import when

__all__ = ["rollback"]

VERBS = ("list", "show", "confirm", "cancel", "escalate")


def _show_rollbacks(c: Context, records: list[dict[str, Any]], title: str) -> None:
    c.out.table(
        records,
        title,
        ("id", "deployment", "kind", "mode", "status", "reason", "actor", "ms", "when"),
        (
            (
                r["id"],
                r["deployment"],
                r["kind"],
                r["mode"],
                r["status"],
                r["reason"],
                r["actor"] + (f" / {r['confirmed_by']}" if r.get("confirmed_by") else ""),
                f"{r['duration_ms']:.1f}" if r.get("duration_ms") is not None else "",
                when(r["created_at"]),
            )
            for r in records
        ),
    )


def _timeline(c: Context, record: dict[str, Any]) -> list[dict[str, Any]]:
    events = c.api.get("/events/log", deployment=record["deployment"], limit=10_000)
    return [e for e in events if (e.get("data") or {}).get("rollback_id") == record["id"]]


def _show(c: Context, rollback_id: str) -> None:
    record = c.api.get(f"/rollbacks/{rollback_id}")
    timeline = _timeline(c, record)
    if c.out.as_json:
        c.out.json({**record, "timeline": timeline})
        return
    _show_rollbacks(c, [record], f"rollback {rollback_id}")
    for stage in record.get("stages", []):
        applied = when(stage["applied_at"]) if stage.get("applied_at") else "not yet"
        c.out.console.print(
            f"stage {stage['name']} -> {stage['target_percentage']:g} %: {applied}",
            highlight=False,
        )
    for event in timeline:
        kind = event["type"].removeprefix("io.canaryguard.")
        c.out.console.print(f"{when(event['time'])} {kind}", highlight=False)
    if record.get("trigger_metrics"):
        m = record["trigger_metrics"]
        c.out.console.print(
            f"metrics at the trigger: canary {m['canary']['errors']}/{m['canary']['requests']} "
            f"errors, stable {m['stable']['errors']}/{m['stable']['requests']}",
            highlight=False,
        )
    for key in ("held", "error"):
        if record.get(key):
            c.out.console.print(f"{key}: {record[key]}", highlight=False)


def _done(c: Context, record: dict[str, Any]) -> None:
    target = record["deployment"]
    if record["status"] == "running":
        c.out.result(record, f"staged rollback {record['id']} of {target} is running")
        return
    before, after = record["revision_before"], record["revision_after"]
    c.out.result(
        record,
        f"rolled back {target} ({record['id']}) in {record['duration_ms']:.1f} ms: revision "
        f"{before} -> {after}; the state before is kept as snapshot {record['pre_snapshot_id']}",
    )


def _follow(c: Context, record: dict[str, Any], *, timeout: float = 3_600) -> dict[str, Any]:
    """Show a running staged rollback's stages as a progress bar until it ends."""
    total = max(len(record.get("stages", [])), 1)
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} stages"),
        TimeElapsedColumn(),
        console=c.out.console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"rollback {record['id']}", total=total)
        while record["status"] in {"running", "pending"} and time.monotonic() < deadline:
            time.sleep(0.25)
            record = c.api.get(f"/rollbacks/{record['id']}")
            done = sum(1 for s in record.get("stages", []) if s.get("applied_at"))
            applied = [s for s in record.get("stages", []) if s.get("applied_at")]
            where = f"canary at {applied[-1]['target_percentage']:g} %" if applied else "starting"
            held = f" (held: {record['held']})" if record.get("held") else ""
            progress.update(
                task, completed=done, description=f"rollback {record['id']}: {where}{held}"
            )
    if record["status"] == "failed":
        raise CliError(f"rollback {record['id']} failed: {record.get('error')}", EXIT_ERROR)
    return record


def rollback(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="a deployment, or: list [DEPLOYMENT] | show ID | confirm ID | cancel ID "
            "| escalate ID"
        ),
    ],
    extra: Annotated[
        str | None,
        typer.Argument(help="with list: a deployment; with the other verbs: a rollback id"),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="snapshot id (default: before the canary)")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="why, for the record")] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="roll back now instead of asking for a confirmation")
    ] = False,
    staged: Annotated[
        bool, typer.Option("--staged", help="walk traffic back in the configured stages")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="staged: follow it to the end")
    ] = True,
    kind: Annotated[str | None, typer.Option("--kind", help="list: auto or manual")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="list: pending, running, completed, ...")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="list: only those started at or after (ISO 8601 time)"),
    ] = None,
    expect: Annotated[int | None, typer.Option("--expect-revision")] = None,
) -> None:
    """Roll DEPLOYMENT back (now with --yes; else it waits for a confirmation; --staged walks
    the configured stages with a live progress bar), confirm, cancel or escalate a rollback,
    or list and show rollbacks.

    \b
    canaryguard rollback payments/security --reason "errors up" [--to SNAPSHOT] [--staged] [--yes]
    canaryguard rollback confirm ROLLBACK_ID | cancel ROLLBACK_ID
    canaryguard rollback escalate ROLLBACK_ID --reason TEXT   (a staged one: the rest at once)
    canaryguard rollback list [DEPLOYMENT] [--kind auto] [--status completed]
    canaryguard rollback show ROLLBACK_ID
    """
    c = ctx_of(ctx)
    if target in VERBS:
        _verb(c, target, extra, reason=reason, kind=kind, status=status, since=since, wait=wait)
        return
    if extra is not None:
        raise CliError(f"unexpected argument {extra!r}", EXIT_USAGE)
    if not reason:
        raise CliError("say why: --reason TEXT (it goes into the audit log)", EXIT_USAGE)
    body = {"reason": reason, "to": to, "expected_revision": expect, "confirm": yes}
    record = c.api.post(f"/deployments/{target}/rollbacks", {**body, "staged": staged})
    if not yes:
        c.out.result(
            record,
            f"{'staged ' if staged else ''}rollback {record['id']} of {target} waits for a "
            f"confirmation until {when(record['expires_at'])}; nothing changed yet.\n"
            f"confirm: canaryguard rollback confirm {record['id']}\n"
            f"cancel:  canaryguard rollback cancel {record['id']}",
        )
        return
    if record["status"] == "running" and wait and not c.out.as_json:
        record = _follow(c, record)
    _done(c, record)


def _verb(
    c: Context,
    verb: str,
    extra: str | None,
    *,
    reason: str | None,
    kind: str | None,
    status: str | None,
    since: str | None,
    wait: bool,
) -> None:
    if verb == "list":
        path = f"/deployments/{extra}/rollbacks" if extra else "/rollbacks"
        try:
            start = datetime.fromisoformat(since) if since else None
        except ValueError as exc:
            raise CliError(f"--since is not an ISO 8601 time: {since!r}", EXIT_USAGE) from exc
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        records = [
            r
            for r in c.api.get(path, limit=1000)
            if (kind is None or r["kind"] == kind)
            and (status is None or r["status"] == status)
            and (start is None or datetime.fromisoformat(r["created_at"]) >= start)
        ]
        _show_rollbacks(c, records, f"rollbacks{' of ' + extra if extra else ''}")
        return
    if extra is None:
        raise CliError(f"rollback {verb} needs a rollback id", EXIT_USAGE)
    if verb == "show":
        _show(c, extra)
        return
    if verb == "cancel":
        record = c.api.post(f"/rollbacks/{extra}/cancel")
        c.out.result(record, f"rollback {extra} cancelled: nothing changed")
        return
    if verb == "escalate":
        if not reason:
            raise CliError("say why: --reason TEXT (it goes into the audit log)", EXIT_USAGE)
        _done(c, c.api.post(f"/rollbacks/{extra}/escalate", {"reason": reason}))
        return
    record = c.api.post(f"/rollbacks/{extra}/confirm")
    if record["status"] == "running" and wait and not c.out.as_json:
        record = _follow(c, record)
    _done(c, record)
