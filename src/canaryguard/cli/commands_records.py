"""``canaryguard snapshot ...``, ``rollback ...``, ``events`` and ``audit ...``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from canaryguard.cli.client import EXIT_ERROR
from canaryguard.cli.context import ctx_of
from canaryguard.cli.output import when

__all__ = ["audit_app", "events", "snapshot_app"]

snapshot_app = typer.Typer(help="Encrypted states of a deployment.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@snapshot_app.command("list")
def snapshot_list(ctx: typer.Context, deployment: str) -> None:
    c = ctx_of(ctx)
    infos = c.api.get(f"/deployments/{deployment}/snapshots")
    c.out.table(
        infos,
        f"snapshots of {deployment}",
        ("seq", "id", "kind", "revision", "pinned", "taken"),
        (
            (
                s["seq"],
                s["id"],
                s["kind"],
                s["revision"],
                "yes" if s["pinned"] else "",
                when(s["created_at"]),
            )
            for s in infos
        ),
    )


@snapshot_app.command("show")
def snapshot_show(ctx: typer.Context, snapshot_id: str) -> None:
    """The snapshot in full, both policy documents included."""
    c = ctx_of(ctx)
    snapshot = c.api.get(f"/snapshots/{snapshot_id}")
    if c.out.as_json:
        c.out.json(snapshot)
    else:
        c.out.console.print_json(data=snapshot)


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    deployment: str,
    note: Annotated[str, typer.Option("--note", help="why this snapshot")] = "",
    pin: Annotated[bool, typer.Option("--pin", help="retention never drops it")] = False,
) -> None:
    c = ctx_of(ctx)
    made = c.api.post(f"/deployments/{deployment}/snapshots", {"note": note, "pinned": pin})
    c.out.result(made, f"snapshot {made['id']} of {deployment} at revision {made['revision']}")


@snapshot_app.command("pin")
def snapshot_pin(
    ctx: typer.Context,
    snapshot_id: str,
    off: Annotated[bool, typer.Option("--off", help="unpin instead")] = False,
) -> None:
    c = ctx_of(ctx)
    info = c.api.post(f"/snapshots/{snapshot_id}/pin", {"pinned": not off})
    c.out.result(info, f"snapshot {snapshot_id} {'pinned' if info['pinned'] else 'unpinned'}")


@snapshot_app.command("diff")
def snapshot_diff(ctx: typer.Context, old: str, new: str) -> None:
    """Every field that differs between two snapshots."""
    c = ctx_of(ctx)
    changes = c.api.get(f"/snapshots/{old}/diff/{new}")
    c.out.table(
        changes,
        f"{old} -> {new}",
        ("path", "change", "old", "new"),
        ((x["path"], x["kind"], x.get("old"), x.get("new")) for x in changes),
    )


def events(
    ctx: typer.Context,
    deployment: Annotated[str | None, typer.Argument(help="only this deployment's events")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream live events until Ctrl-C")
    ] = False,
    after: Annotated[
        int | None, typer.Option("--after", min=0, help="start after this event id")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Events as CloudEvents: the stored log, or live with --follow (resumes after drops)."""
    c = ctx_of(ctx)
    if not follow:
        stored = c.api.get("/events/log", deployment=deployment, after=after or 0, limit=limit)
        c.out.table(
            stored,
            "events",
            ("id", "time", "deployment", "type", "data"),
            (
                (e["id"], when(e["time"]), e.get("subject", ""), e["type"], e["data"])
                for e in stored
            ),
        )
        return
    try:
        for event in c.api.stream_events(deployment=deployment, after=after):
            if c.out.as_json:
                print(json_line(event), flush=True)
            else:
                where, kind = event.get("subject", "-"), event["type"]
                c.out.console.print(
                    f"{event['id']:>6} {when(event['time'])} {where} {kind} {event['data']}",
                    highlight=False,
                )
    except KeyboardInterrupt:
        return


def json_line(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    deployment: Annotated[str | None, typer.Option("--deployment", "-d")] = None,
    after: Annotated[int, typer.Option("--after", min=0)] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """Audit records, oldest first: who did what, when, why, revision before and after."""
    c = ctx_of(ctx)
    records = c.api.get("/audit", deployment=deployment, after=after, limit=limit)
    c.out.table(
        records,
        "audit log",
        ("seq", "time", "actor", "action", "deployment", "revisions", "reason"),
        (
            (
                r["seq"],
                r["time"],
                r["actor"],
                r["action"],
                r.get("deployment"),
                _revisions(r),
                r.get("reason"),
            )
            for r in records
        ),
    )


def _revisions(record: dict[str, Any]) -> str:
    if record.get("revision_after") is None:
        return ""
    return f"{record.get('revision_before') or '-'} -> {record['revision_after']}"


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the hash chain; exit 1 and name the first bad record when it is broken."""
    c = ctx_of(ctx)
    verdict = c.api.get("/audit/verify")
    if verdict["ok"]:
        c.out.result(verdict, f"audit chain intact: {verdict['checked']} records")
        return
    c.out.result(
        verdict,
        f"[red]audit chain broken at record {verdict['first_bad_seq']}:[/red] {verdict['problem']}",
    )
    raise typer.Exit(EXIT_ERROR)
