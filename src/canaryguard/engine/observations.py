"""Recording outcomes per deployment, variant and second, and summarising them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from canaryguard.domain.assignment import Variant
from canaryguard.domain.errors import InvalidInput, NotFound
from canaryguard.domain.models import MetricsSummary, Observation
from canaryguard.engine.snapshots import metrics_summary
from canaryguard.engine.unit import Ports

__all__ = ["MAX_BATCH", "IngestResult", "ObservationService"]

MAX_BATCH = 10_000
PAST_LIMIT = timedelta(days=7)  # older seconds are history, not telemetry
FUTURE_LIMIT = timedelta(minutes=5)  # clock skew a client may have
BATCH_MEMORY = timedelta(hours=1)  # how long a batch id is remembered against retries
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicate: bool


def _observation(value: dict[str, Any], index: int) -> Observation:
    try:
        return Observation.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"observation {index}: {problems}") from exc


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
        histogram: dict[int, int] | None = None,
    ) -> None:
        """Merge one second's aggregate for one variant into the store."""
        observation = _observation(
            {
                "deployment": deployment,
                "variant": variant,
                "second": int(at.timestamp()),
                "requests": requests,
                "errors": errors,
                "latency_sum_ms": latency_sum_ms,
                "latency_max_ms": latency_max_ms,
                "histogram": histogram or {},
            },
            0,
        )
        await self.ingest([observation])

    async def ingest(
        self, observations: Sequence[Observation], *, batch_id: str | None = None
    ) -> IngestResult:
        """Merge a batch; with a ``batch_id``, a batch seen before is accepted and not counted
        again (clients retry). The whole batch is refused, naming the entry, when one is bad."""
        if len(observations) > MAX_BATCH:
            raise InvalidInput(
                f"a batch holds at most {MAX_BATCH} observations, got {len(observations)}"
            )
        if batch_id is not None and not _BATCH_ID.match(batch_id):
            raise InvalidInput("batch_id is 1-64 letters, digits, '_' or '-'")
        now = self._ports.clock.now()
        earliest, latest = (now - PAST_LIMIT).timestamp(), (now + FUTURE_LIMIT).timestamp()
        for index, observation in enumerate(observations):
            if not earliest <= observation.second <= latest:
                raise InvalidInput(
                    f"observation {index}: second {observation.second} is more than 7 days old "
                    "or more than 5 minutes ahead of the server's clock"
                )
        async with self._ports.store.write(exclusive=False) as tx:
            names = {o.deployment for o in observations}
            missing = names - await tx.deployments.existing(names)
            if missing:
                raise NotFound(f"no deployment named {', '.join(repr(n) for n in sorted(missing))}")
            if batch_id is not None and not await tx.observations.first_time(batch_id, at=now):
                return IngestResult(accepted=len(observations), duplicate=True)
            await tx.observations.add_many(observations)
        return IngestResult(accepted=len(observations), duplicate=False)

    async def forget_old_batches(self) -> None:
        """Drop batch ids older than the retry horizon (called periodically by the server)."""
        async with self._ports.store.write(exclusive=False) as tx:
            await tx.observations.forget_batches(before=self._ports.clock.now() - BATCH_MEMORY)

    async def summary(self, deployment: str) -> MetricsSummary:
        """Both variants over the deployment's evaluation window, ending now."""
        async with self._ports.store.read() as tx:
            current = await tx.deployments.get(deployment)
            if current is None:
                raise NotFound(f"no deployment named {deployment!r}")
            return await metrics_summary(tx, current, self._ports.clock.now())
