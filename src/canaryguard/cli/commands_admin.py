"""``canaryguard config ...``, ``token ...``, ``keys ...`` and ``notifications``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from canaryguard.cli.client import EXIT_USAGE, CliError
from canaryguard.cli.context import ctx_of
from canaryguard.cli.output import when

__all__ = ["config_app", "keys_app", "notifications", "token_app"]

config_app = typer.Typer(help="Rollback settings of a deployment.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (admin).", no_args_is_help=True)
keys_app = typer.Typer(help="Snapshot encryption keys (admin).", no_args_is_help=True)


def _value(text: str) -> Any:
    """``0.02`` -> 0.02, ``true`` -> True, ``{"stages": ...}`` -> a dict, anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@config_app.command("show")
def config_show(ctx: typer.Context, deployment: str) -> None:
    c = ctx_of(ctx)
    config = c.api.get(f"/deployments/{deployment}/config")
    c.out.table(
        config,
        f"rollback settings of {deployment}",
        ("setting", "value"),
        ((key, json.dumps(v) if isinstance(v, dict | list) else v) for key, v in config.items()),
    )


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    deployment: str,
    settings: Annotated[
        list[str], typer.Argument(help="KEY=VALUE, e.g. error_rate_threshold=0.02")
    ],
) -> None:
    """Change rollback settings; values are JSON where they parse as JSON."""
    c = ctx_of(ctx)
    changes: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"expected KEY=VALUE, got {item!r}", EXIT_USAGE)
        changes[key.strip()] = _value(value.strip())
    updated = c.api.request("PATCH", f"/deployments/{deployment}/config", json={"changes": changes})
    c.out.result(updated, f"{deployment}: settings changed (revision {updated['revision']})")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name")],
    role: Annotated[str, typer.Option("--role", help="reporter, viewer, operator or admin")],
    expires_days: Annotated[float | None, typer.Option("--expires-days", min=0.001)] = None,
) -> None:
    """Create a token; the secret is printed this once."""
    c = ctx_of(ctx)
    made = c.api.post("/tokens", {"name": name, "role": role, "expires_in_days": expires_days})
    c.out.result(
        made,
        f"token {made['name']} ({made['role']}); keep it now, it is not shown again:\n"
        f"{made['token']}",
    )


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    c = ctx_of(ctx)
    tokens = c.api.get("/tokens")
    c.out.table(
        tokens,
        "tokens",
        ("name", "role", "created", "by", "expires", "revoked"),
        (
            (
                t["name"],
                t["role"],
                when(t["created_at"]),
                t["created_by"],
                when(t.get("expires_at")),
                when(t.get("revoked_at")),
            )
            for t in tokens
        ),
    )


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: str) -> None:
    """Revoke a token; it is refused from the next request on."""
    c = ctx_of(ctx)
    revoked = c.api.request("DELETE", f"/tokens/{name}")
    c.out.result(revoked, f"token {name} revoked")


@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context) -> None:
    """Make a new snapshot key and re-encrypt every snapshot with it."""
    c = ctx_of(ctx)
    rotated = c.api.post("/keys/rotate")
    message = (
        f"primary key is now {rotated['key_id']}; re-encrypted {rotated['reencrypted']} snapshots"
    )
    not_opened = rotated.get("not_opened") or []
    if not_opened:
        # said, not failed: the rest are under the new key, and these cannot be by any run
        message += (
            f"; {len(not_opened)} do not open (changed in the store, or under a key that is "
            f"gone) and stay as they are: {', '.join(not_opened)}"
        )
    c.out.result(rotated, message)


def notifications(ctx: typer.Context) -> None:
    """The alert channels the server sends to, and how their deliveries go."""
    c = ctx_of(ctx)
    channels = c.api.get("/notifications")
    c.out.table(
        channels,
        "notification channels (serve --notifications FILE)",
        ("channel", "kind", "level", "filters", "cursor", "sent", "failed", "last error"),
        (
            (
                ch["name"],
                ch["kind"],
                f"{ch['min_level']}+",
                " ".join(ch["deployments"] + ch["events"]) or "all",
                "" if ch["cursor"] is None else ch["cursor"],
                ch["sent"] if ch["sending"] else "(follower)",
                ch["failed"],
                f"{when(ch['last_error_at'])} {ch['last_error']}" if ch["last_error"] else "",
            )
            for ch in channels
        ),
    )
