"""A scripted walkthrough of the core: publish, canary, roll back, show the record."""

from __future__ import annotations

import json
from datetime import timedelta
from importlib import resources

from rich.console import Console
from rich.table import Table

from canaryguard.domain.assignment import Variant
from canaryguard.domain.models import DeploymentState
from canaryguard.engine.app import CanaryGuard
from canaryguard.wiring import Settings, open_canaryguard

__all__ = ["run_walkthrough"]

ACTOR = "walkthrough"
POLICY = "payments-security"


async def _next_name(app: CanaryGuard) -> str:
    taken = {d.name for d in await app.deployments.list()}
    run = 1
    while f"payments-gateway/run-{run}" in taken:
        run += 1
    return f"payments-gateway/run-{run}"


async def run_walkthrough(settings: Settings, console: Console) -> None:
    """Run the walkthrough against ``settings``, printing each step to ``console``."""
    app = await open_canaryguard(settings)
    try:
        await _walk(app, console)
    finally:
        await app.close()


async def _walk(app: CanaryGuard, console: Console) -> None:
    for notice in app.notices:
        console.print(f"[yellow]note:[/yellow] {notice}")
    examples = resources.files("canaryguard") / "examples"
    await app.policies.set_schema(
        POLICY, _json((examples / "security-policy.schema.json").read_text()), actor=ACTOR
    )
    with resources.as_file(examples / "security-v1.yaml") as v1_path:
        v1 = await app.policies.publish_file(v1_path, name=POLICY, actor=ACTOR)
    with resources.as_file(examples / "security-v2.toml") as v2_path:
        v2 = await app.policies.publish_file(v2_path, name=POLICY, actor=ACTOR)
    console.print(
        f"published {v1.ref} ({v1.content_hash[:19]}) and {v2.ref} ({v2.content_hash[:19]})"
    )

    name = await _next_name(app)
    deployment = await app.deployments.create(name, stable=str(v1.ref), actor=ACTOR)
    console.print(
        f"created deployment [bold]{name}[/bold] serving {deployment.stable} (revision 1)"
    )
    deployment = await app.deployments.start_canary(
        name, policy=str(v2.ref), percent=10, actor=ACTOR, expected_revision=deployment.revision
    )
    console.print(
        f"canary {deployment.canary} on {deployment.split.canary_percent:g} % of users "
        f"(state {deployment.state.value}, revision {deployment.revision})"
    )

    # a minute of traffic: the canary fails about five times as often as stable
    now = app.ports.clock.now()
    for second in range(60):
        at = now - timedelta(seconds=60 - second)
        await app.observations.record(
            name,
            Variant.STABLE,
            at=at,
            requests=900,
            errors=9,
            latency_sum_ms=900 * 42.0,
            latency_max_ms=180,
        )
        await app.observations.record(
            name,
            Variant.CANARY,
            at=at,
            requests=100,
            errors=5,
            latency_sum_ms=100 * 55.0,
            latency_max_ms=900,
        )
    summary = await app.observations.summary(name)
    stable, canary = summary.stable, summary.canary
    console.print(
        f"observed: stable {stable.error_rate:.1%} errors over {stable.requests} requests, "
        f"canary {canary.error_rate:.1%} over {canary.requests}"
    )
    await app.snapshots.create(name, actor=ACTOR, note="evidence before rolling back", pinned=True)

    record = await app.rollbacks.rollback(
        name,
        reason=f"canary errors {canary.error_rate:.1%} vs stable {stable.error_rate:.1%}",
        actor=ACTOR,
    )
    after = await app.deployments.get(name)
    if after.state is not DeploymentState.ROLLED_BACK:
        raise RuntimeError(f"expected rolled_back, got {after.state}")
    took = record.duration_ms or 0.0
    console.print(
        f"[green]rolled back[/green] {record.id} in {took:.1f} ms: {after.stable} serves everyone "
        f"again (revision {record.revision_before} -> {record.revision_after})"
    )

    table = Table(title=f"snapshots of {name}")
    for column in ("seq", "id", "kind", "rev", "pinned", "note"):
        table.add_column(column, overflow="fold")
    for info in await app.snapshots.list(name):
        snapshot = await app.snapshots.get(info.id)
        table.add_row(
            str(info.seq),
            info.id,
            info.kind.value,
            str(info.revision),
            "yes" if info.pinned else "",
            snapshot.note,
        )
    console.print(table)

    audit = Table(title="audit trail (newest last)")
    for column in ("seq", "action", "deployment", "revisions", "reason"):
        audit.add_column(column, overflow="fold")
    for entry in (await app.audit.list(limit=10_000))[-12:]:
        revisions = (
            ""
            if entry.revision_after is None
            else f"{entry.revision_before or '-'} -> {entry.revision_after}"
        )
        audit.add_row(
            str(entry.seq),
            entry.action,
            entry.deployment or "",
            revisions,
            entry.reason or "",
        )
    console.print(audit)

    verdict = await app.audit.verify()
    metrics = await app.rollbacks.metrics()
    console.print(
        f"audit chain: {'[green]intact[/green]' if verdict.ok else '[red]BROKEN[/red]'} "
        f"({verdict.checked} records); rollbacks so far: {metrics.total_rollbacks} "
        f"({metrics.successful_rollbacks} successful, "
        f"average {metrics.avg_rollback_duration_ms or 0:.1f} ms)"
    )


def _json(text: str) -> object:
    return json.loads(text)
