"""``canaryguard deploy ...`` and ``canaryguard status``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from canaryguard.cli.context import Context, ctx_of
from canaryguard.cli.output import when

__all__ = ["app", "status"]

app = typer.Typer(help="Create deployments and run canaries.", no_args_is_help=True)
Expect = Annotated[
    int | None,
    typer.Option(
        "--expect-revision", help="refuse (exit 3) unless the deployment is at this revision"
    ),
]


def _changed(c: Context, deployment: dict[str, Any], what: str) -> None:
    split = deployment["split"]["canary_basis_points"] / 100
    canary = deployment.get("canary")
    on = f", canary {canary['name']}@{canary['version']} on {split:g} %" if canary else ""
    name, revision, state = deployment["name"], deployment["revision"], deployment["state"]
    c.out.result(deployment, f"{name}: {what} (revision {revision}, {state}{on})")


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    stable: Annotated[
        str, typer.Option("--stable", help="policy version name@version for everyone")
    ],
) -> None:
    """Create a deployment serving one policy version to everyone."""
    c = ctx_of(ctx)
    _changed(
        c, c.api.post("/deployments", {"name": name, "stable": stable}), f"created, stable {stable}"
    )


@app.command()
def canary(
    ctx: typer.Context,
    name: str,
    policy: Annotated[str, typer.Option("--policy", help="policy version name@version")],
    percent: Annotated[
        float, typer.Option("--percent", help="canary share, 0-100 in steps of 0.01")
    ],
    criterion: Annotated[
        str, typer.Option("--criterion", help="user_id, ip, attribute or random")
    ] = "user_id",
    attribute: Annotated[
        str | None, typer.Option("--attribute", help="for --criterion attribute")
    ] = None,
    canary_group: Annotated[
        list[str] | None, typer.Option("--canary-group", help="always canary")
    ] = None,
    stable_group: Annotated[
        list[str] | None, typer.Option("--stable-group", help="never canary")
    ] = None,
    expect: Expect = None,
) -> None:
    """Start a canary (a snapshot of the state before it is taken first)."""
    c = ctx_of(ctx)
    body = {
        "policy": policy,
        "percent": percent,
        "criterion": criterion,
        "attribute": attribute,
        "canary_groups": canary_group or [],
        "stable_groups": stable_group or [],
        "expected_revision": expect,
    }
    _changed(c, c.api.post(f"/deployments/{name}/canary", body), "canary started")


@app.command()
def split(
    ctx: typer.Context,
    name: str,
    percent: Annotated[float, typer.Option("--percent", help="new canary share")],
    expect: Expect = None,
) -> None:
    """Change the canary share."""
    c = ctx_of(ctx)
    body = {"percent": percent, "expected_revision": expect}
    _changed(c, c.api.post(f"/deployments/{name}/split", body), "split changed")


@app.command()
def promote(ctx: typer.Context, name: str, expect: Expect = None) -> None:
    """Make the canary the stable version for everyone."""
    c = ctx_of(ctx)
    _changed(
        c, c.api.post(f"/deployments/{name}/promote", {"expected_revision": expect}), "promoted"
    )


@app.command()
def abort(
    ctx: typer.Context,
    name: str,
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")],
    expect: Expect = None,
) -> None:
    """Stop the canary; stable serves everyone again."""
    c = ctx_of(ctx)
    body = {"reason": reason, "expected_revision": expect}
    _changed(c, c.api.post(f"/deployments/{name}/abort", body), "canary aborted")


def _overview(c: Context) -> tuple[Any, Table]:
    deployments = c.api.get("/deployments")
    table = Table(title="deployments", title_justify="left")
    for column in ("name", "state", "stable", "canary", "canary %", "revision", "since"):
        table.add_column(column)
    for d in deployments:
        canary = d.get("canary")
        table.add_row(
            d["name"],
            d["state"],
            f"{d['stable']['name']}@{d['stable']['version']}",
            f"{canary['name']}@{canary['version']}" if canary else "",
            f"{d['split']['canary_basis_points'] / 100:g}",
            str(d["revision"]),
            when(d["state_since"]),
        )
    return deployments, table


def _detail(c: Context, name: str) -> tuple[Any, Group]:
    status_ = c.api.get(f"/deployments/{name}/status")
    d, m, r = status_["deployment"], status_["metrics"], status_["rollbacks"]
    head = Table.grid(padding=(0, 2))
    canary = d.get("canary")
    head.add_row("deployment", f"[bold]{d['name']}[/bold] (revision {d['revision']})")
    head.add_row(
        "state",
        f"{d['state']} since {when(d['state_since'])}"
        + (f": {d['state_reason']}" if d.get("state_reason") else ""),
    )
    head.add_row("stable", f"{d['stable']['name']}@{d['stable']['version']}")
    head.add_row(
        "canary",
        f"{canary['name']}@{canary['version']} on {status_['canary_percent']:g} %"
        if canary
        else "none",
    )
    head.add_row(
        "rollbacks",
        f"{r['total_rollbacks']} ({r['auto_rollbacks']} auto, {r['failed_rollbacks']} failed)",
    )
    metrics = Table(title=f"last {m['window_seconds'] / 60:g} min", title_justify="left")
    for column in ("variant", "requests", "errors", "error rate", "mean ms", "p99 ms", "max ms"):
        metrics.add_column(column)
    for variant in ("stable", "canary"):
        v = m[variant]
        rate = v["errors"] / v["requests"] if v["requests"] else 0.0
        mean = v["latency_sum_ms"] / v["requests"] if v["requests"] else 0.0
        metrics.add_row(
            variant,
            str(v["requests"]),
            str(v["errors"]),
            f"{rate:.2%}",
            f"{mean:.1f}",
            f"{v.get('p99_ms', 0):.1f}",
            f"{v['latency_max_ms']:.1f}",
        )
    return status_, Group(head, metrics)


@app.command()
def verdict(ctx: typer.Context, name: str) -> None:
    """What the monitor says of the canary now: each test's evidence, each condition, and an
    automatic rollback taken or waiting for its veto window."""
    c = ctx_of(ctx)
    value = c.api.get(f"/deployments/{name}/verdict")
    if c.out.as_json:
        c.out.json(value)
        return
    if not value["judged"]:
        c.out.console.print(f"{name}: no canary under judgement", highlight=False)
        return
    c.out.console.print(
        f"{name}: [bold]{value['verdict']}[/bold]"
        + (f" ({value['condition']}): {value['reason']}" if value["reason"] else ""),
        highlight=False,
    )
    tests = Table(title="sequential tests", title_justify="left")
    for column in ("test", "e-value", "threshold", "dispersion", "canary", "stable", "requests"):
        tests.add_column(column)
    for t in value["tests"]:
        tests.add_row(
            t["name"],
            f"{t['e_value']:,.2f}",
            f"{t['threshold']:,.0f}",
            f"{t['dispersion']:.2f}",
            f"{t['canary_rate']:.2%}",
            f"{t['stable_rate']:.2%}",
            f"{t['canary_requests']:,}",
        )
    c.out.console.print(tests)
    if value.get("waiting"):
        c.out.console.print(f"[yellow]waiting[/yellow]: {value['waiting']}", highlight=False)
    if value.get("dispersion_block_seconds"):
        c.out.console.print(
            f"dispersion blocks: {value['dispersion_block_seconds']} s", highlight=False
        )
    for result in value["conditions"]:
        mark = "[red]fired[/red]" if result["fired"] else "ok"
        c.out.console.print(f"{result['fired_as']}: {mark}: {result['reason']}", highlight=False)
    decision = value.get("decision")
    if decision:
        c.out.console.print(
            f"decision: {decision['reason']}; rollback {decision['rollback_id'] or 'pending'}"
            + (f", veto until {when(decision['veto_until'])}" if decision["veto_until"] else ""),
            highlight=False,
        )


@app.command()
def veto(ctx: typer.Context, name: str) -> None:
    """Cancel an automatic rollback that waits in its veto window."""
    c = ctx_of(ctx)
    value = c.api.post(f"/deployments/{name}/veto")
    c.out.result(value, f"automatic rollback of {name} vetoed: {value['reason']}")


def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="a deployment; all when omitted")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until Ctrl-C")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="seconds between refreshes")
    ] = 2.0,
) -> None:
    """Where deployments are: state, versions, split, metrics, rollbacks."""
    c = ctx_of(ctx)

    def render() -> tuple[Any, Any]:
        return _detail(c, name) if name else _overview(c)

    value, view = render()
    if c.out.as_json and not watch:
        c.out.json(value)
        return
    if not watch:
        c.out.console.print(view)
        return
    try:
        with Live(view, console=c.out.console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                value, view = render()
                if c.out.as_json:
                    c.out.json(value)
                else:
                    live.update(view)
    except KeyboardInterrupt:
        return
