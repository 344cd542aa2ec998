"""Deployments: create, start a canary, change the split, promote, abort, configure."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from canaryguard.domain import rollout
from canaryguard.domain.assignment import (
    Criterion,
    Variant,
    choose_variant,
    percent_to_basis_points,
)
from canaryguard.domain.documents import validate_document
from canaryguard.domain.errors import AlreadyExists, InvalidInput, NotFound
from canaryguard.domain.events import (
    CanaryAborted,
    CanaryPromoted,
    CanaryStarted,
    ConfigChanged,
    DeploymentCreated,
    Event,
    SplitChanged,
)
from canaryguard.domain.models import (
    Assignment,
    Deployment,
    PrometheusSelectors,
    RollbackConfig,
    SnapshotKind,
)
from canaryguard.domain.states import Action, check_transition
from canaryguard.engine.policies import resolve
from canaryguard.engine.snapshots import SnapshotService
from canaryguard.engine.unit import Ports, Unit, check_text, load_for_write, unit_of_work

__all__ = ["DeploymentService"]

Step = Callable[[Unit, Deployment], Awaitable[tuple[Deployment, Sequence[Event], dict[str, Any]]]]


def _basis_points(percent: float) -> int:
    try:
        return percent_to_basis_points(percent)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from exc


def _criterion(value: str | Criterion) -> Criterion:
    try:
        return Criterion(value)
    except ValueError as exc:
        choices = ", ".join(c.value for c in Criterion)
        raise InvalidInput(f"unknown split criterion {value!r}; use one of {choices}") from exc


def _config_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}"
        for error in exc.errors()
    )


class DeploymentService:
    """Changes of who gets what. Each is one transaction with its snapshot, events and audit."""

    def __init__(self, ports: Ports, snapshots: SnapshotService) -> None:
        self._ports = ports
        self._snapshots = snapshots

    async def _change(
        self,
        name: str,
        *,
        actor: str,
        expected_revision: int | None,
        action: str,
        reason: str | None,
        step: Step,
    ) -> Deployment:
        async with unit_of_work(self._ports, actor) as unit:
            current = await load_for_write(unit.tx, name, expected_revision)
            updated, events, details = await step(unit, current)
            await unit.tx.deployments.update(updated, expected_revision=current.revision)
            for event in events:
                await unit.emit(event, deployment=name, revision=updated.revision)
            await unit.audit(
                action,
                deployment=name,
                reason=reason,
                revision_before=current.revision,
                revision_after=updated.revision,
                details=details,
            )
        return updated

    async def create(
        self,
        name: str,
        *,
        stable: str,
        actor: str,
        config: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """A new deployment serving the policy version ``stable`` (``name@version``) to everyone."""
        rollout.check_deployment_name(name)
        checked_config = self._checked_config(RollbackConfig(), config or {})
        await self._check_source(checked_config, None)
        async with unit_of_work(self._ports, actor) as unit:
            if await unit.tx.deployments.get(name) is not None:
                raise AlreadyExists(f"deployment {name} already exists")
            version = await resolve(unit.tx, stable)
            deployment = rollout.create_deployment(
                name,
                stable=version.ref,
                salt=secrets.token_hex(8),
                now=unit.now,
                config=checked_config,
            )
            await unit.tx.deployments.insert(deployment)
            await unit.emit(DeploymentCreated(stable=str(version.ref)), deployment=name, revision=1)
            await unit.audit(
                "deployment.create",
                deployment=name,
                revision_after=1,
                details={"stable": str(version.ref)},
            )
        return deployment

    async def start_canary(
        self,
        name: str,
        *,
        policy: str,
        percent: float,
        actor: str,
        criterion: str | Criterion = Criterion.USER_ID,
        attribute: str | None = None,
        canary_groups: Sequence[str] = (),
        stable_groups: Sequence[str] = (),
        expected_revision: int | None = None,
    ) -> Deployment:
        """Start a canary of ``policy`` on ``percent`` % of the traffic (0 % = validating)."""
        basis_points = _basis_points(percent)
        chosen = _criterion(criterion)

        async def step(
            unit: Unit, current: Deployment
        ) -> tuple[Deployment, list[Event], dict[str, Any]]:
            version = await resolve(unit.tx, policy)
            schema = await unit.tx.policies.get_schema(version.name)
            if schema is not None:
                # the schema may have been registered after this version was published
                validate_document(version.document, schema, policy=version.name)
            check_transition(current.state, Action.START_CANARY)  # refuse before any snapshot
            baseline = await self._snapshots.capture(
                unit, current, kind=SnapshotKind.BEFORE_CANARY, note=f"before canary {version.ref}"
            )
            updated = rollout.start_canary(
                current,
                canary=version.ref,
                canary_basis_points=basis_points,
                criterion=chosen,
                attribute=attribute,
                canary_groups=tuple(canary_groups),
                stable_groups=tuple(stable_groups),
                baseline_snapshot_id=baseline.id,
                now=unit.now,
            )
            event = CanaryStarted(
                canary=str(version.ref),
                percentage=updated.split.canary_percent,
                criterion=chosen.value,
                snapshot_id=baseline.id,
            )
            return (
                updated,
                [event],
                {"canary": str(version.ref), "percentage": updated.split.canary_percent},
            )

        return await self._change(
            name,
            actor=actor,
            expected_revision=expected_revision,
            action="deployment.canary.start",
            reason=None,
            step=step,
        )

    async def set_split(
        self,
        name: str,
        *,
        percent: float,
        actor: str,
        canary_groups: Sequence[str] | None = None,
        stable_groups: Sequence[str] | None = None,
        expected_revision: int | None = None,
    ) -> Deployment:
        """Change the canary share of a running canary."""
        basis_points = _basis_points(percent)

        async def step(
            unit: Unit, current: Deployment
        ) -> tuple[Deployment, list[Event], dict[str, Any]]:
            updated = rollout.change_split(
                current,
                canary_basis_points=basis_points,
                canary_groups=tuple(canary_groups) if canary_groups is not None else None,
                stable_groups=tuple(stable_groups) if stable_groups is not None else None,
                now=unit.now,
            )
            before, after = current.split.canary_percent, updated.split.canary_percent
            return (
                updated,
                [SplitChanged(from_percentage=before, to_percentage=after)],
                {"from_percentage": before, "to_percentage": after},
            )

        return await self._change(
            name,
            actor=actor,
            expected_revision=expected_revision,
            action="deployment.split.change",
            reason=None,
            step=step,
        )

    async def promote(
        self, name: str, *, actor: str, expected_revision: int | None = None
    ) -> Deployment:
        """Make the canary the stable version for everyone."""

        async def step(
            unit: Unit, current: Deployment
        ) -> tuple[Deployment, list[Event], dict[str, Any]]:
            updated = rollout.promote(current, now=unit.now)  # refuses before the snapshot
            snapshot = await self._snapshots.capture(
                unit,
                current,
                kind=SnapshotKind.BEFORE_PROMOTION,
                note=f"before promoting {current.canary}",
            )
            event = CanaryPromoted(stable=str(updated.stable), snapshot_id=snapshot.id)
            return updated, [event], {"stable": str(updated.stable), "snapshot_id": snapshot.id}

        return await self._change(
            name,
            actor=actor,
            expected_revision=expected_revision,
            action="deployment.promote",
            reason=None,
            step=step,
        )

    async def abort(
        self, name: str, *, reason: str, actor: str, expected_revision: int | None = None
    ) -> Deployment:
        """Stop the canary; stable serves everyone again."""
        reason = check_text(reason, "the reason", required=True)

        async def step(
            unit: Unit, current: Deployment
        ) -> tuple[Deployment, list[Event], dict[str, Any]]:
            updated = rollout.abort(current, reason=reason, now=unit.now)
            snapshot = await self._snapshots.capture(
                unit, current, kind=SnapshotKind.BEFORE_ABORT, note=f"before abort: {reason}"
            )
            return (
                updated,
                [CanaryAborted(reason=reason, snapshot_id=snapshot.id)],
                {"snapshot_id": snapshot.id},
            )

        return await self._change(
            name,
            actor=actor,
            expected_revision=expected_revision,
            action="deployment.abort",
            reason=reason,
            step=step,
        )

    async def configure(
        self,
        name: str,
        *,
        changes: Mapping[str, Any],
        actor: str,
        expected_revision: int | None = None,
    ) -> Deployment:
        """Change rollback settings at run time (``{"error_rate_threshold": 0.02, ...}``)."""
        if not changes:
            raise InvalidInput("no settings to change")
        if "prometheus" in changes:
            # asked of Prometheus before the change's transaction, which must stay short
            async with self._ports.store.read() as tx:
                current = await tx.deployments.get(name)
            if current is not None:
                before = current.config.prometheus
                await self._check_source(self._checked_config(current.config, changes), before)

        async def step(
            unit: Unit, current: Deployment
        ) -> tuple[Deployment, list[Event], dict[str, Any]]:
            config = self._checked_config(current.config, changes)
            updated = rollout.configure(current, config=config, now=unit.now)
            shown = {key: config.model_dump(mode="json")[key] for key in changes}
            return updated, [ConfigChanged(changes=shown)], {"changes": shown}

        return await self._change(
            name,
            actor=actor,
            expected_revision=expected_revision,
            action="deployment.config.change",
            reason=None,
            step=step,
        )

    async def _check_source(
        self, config: RollbackConfig, before: PrometheusSelectors | None
    ) -> None:
        """New Prometheus selectors need a server that reads Prometheus, which accepts them."""
        selectors = config.prometheus
        if selectors is None or selectors == before:
            return
        source = self._ports.metrics_source
        if source is None:
            raise InvalidInput(
                "prometheus: this server reads no Prometheus; start it with "
                "--prometheus URL (or CANARYGUARD_PROMETHEUS_URL)"
            )
        await source.check(selectors)

    @staticmethod
    def _checked_config(base: RollbackConfig, changes: Mapping[str, Any]) -> RollbackConfig:
        unknown = sorted(set(changes) - set(RollbackConfig.model_fields))
        if unknown:
            known = ", ".join(RollbackConfig.model_fields)
            raise InvalidInput(f"unknown rollback setting {', '.join(unknown)}; known: {known}")
        try:
            return RollbackConfig.model_validate({**base.model_dump(), **changes})
        except ValidationError as exc:
            raise InvalidInput(f"invalid rollback settings: {_config_errors(exc)}") from exc

    async def assign(
        self,
        name: str,
        *,
        user_id: str | None = None,
        ip: str | None = None,
        attributes: Mapping[str, str] | None = None,
        groups: Sequence[str] = (),
    ) -> Assignment:
        """The variant and policy one request gets, decided by the same pure code the client
        SDK runs locally (for clients that cannot run it)."""
        async with self._ports.store.read() as tx:
            deployment = await tx.deployments.get(name)
            if deployment is None:
                raise NotFound(f"no deployment named {name!r}")
            variant = choose_variant(
                deployment.split, user_id=user_id, ip=ip, attributes=attributes, groups=groups
            )
            ref = deployment.canary if variant is Variant.CANARY else deployment.stable
            if ref is None:  # the split sends nobody to a canary that does not exist
                ref, variant = deployment.stable, Variant.STABLE
            document = await self._snapshots.documents.get(tx, ref)
        return Assignment(
            deployment=name,
            revision=deployment.revision,
            variant=variant,
            policy=ref,
            document=document.document,
        )

    async def get(self, name: str) -> Deployment:
        async with self._ports.store.read() as tx:
            deployment = await tx.deployments.get(name)
        if deployment is None:
            raise NotFound(f"no deployment named {name!r}")
        return deployment

    async def list(self) -> list[Deployment]:
        async with self._ports.store.read() as tx:
            return await tx.deployments.all()
