"""Recording outcomes per deployment, variant and second, and summarising them."""

from __future__ import annotations

import math
from datetime import datetime

from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import InvalidInput, NotFound
from canaryguard.domain.models import MetricsSummary
from canaryguard.engine.snapshots import metrics_summary
from canaryguard.engine.unit import Ports

__all__ = ["ObservationService"]


class ObservationService:
    """Telemetry, not operations: written outside the serialised (audited) write path."""

    def __init__(self, ports: Ports) -> None:
        self._ports = ports

    async def record(
        self,
        deployment: str,
        variant: Variant | str,
        *,
        at: datetime,
        requests: int,
        errors: int,
        latency_sum_ms: float,
        latency_max_ms: float,
    ) -> None:
        """Merge one second's aggregate for one variant into the store."""
        try:
            chosen = Variant(variant)
        except ValueError as exc:
            raise InvalidInput(f"variant must be stable or canary, got {variant!r}") from exc
        if requests < 0 or errors < 0 or errors > requests:
            raise InvalidInput(f"need 0 <= errors <= requests, got {errors} errors of {requests}")
        for value in (latency_sum_ms, latency_max_ms):
            if not math.isfinite(value) or value < 0:
                raise InvalidInput(f"latencies are finite and not negative, got {value}")
        async with self._ports.store.write(exclusive=False) as tx:
            if await tx.deployments.get(deployment) is None:
                raise NotFound(f"no deployment named {deployment!r}")
            await tx.observations.add(
                deployment,
                chosen,
                second=int(at.timestamp()),
                requests=requests,
                errors=errors,
                latency_sum_ms=latency_sum_ms,
                latency_max_ms=latency_max_ms,
            )

    async def summary(self, deployment: str) -> MetricsSummary:
        """Both variants over the deployment's evaluation window, ending now."""
        async with self._ports.store.read() as tx:
            current = await tx.deployments.get(deployment)
            if current is None:
                raise NotFound(f"no deployment named {deployment!r}")
            return await metrics_summary(tx, current, self._ports.clock.now())
