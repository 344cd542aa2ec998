"""Leadership: with several replicas on one database, exactly one of them runs the monitor and
the rollback executor (invariant 5).

Each replica tries to claim the controller lease every monitor tick; the holder renews it, and
another replica takes it over only once it has expired (``ttl`` after the last renewal), which
raises the lease's *epoch*. The epoch is the fencing token: every change the monitor or the
executor makes first checks, in its own transaction, that this replica still holds the lease at
the epoch it claimed (``fence``), and the check locks the lease row until the commit. A replica
that stalled past its lease (a long pause, a lost network) and wakes up still believing it leads
therefore cannot act: its change is refused with ``NotLeader`` and nothing is written. The
others serve reads and manual operations as before.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from canaryguard.domain.errors import NotLeader
from canaryguard.engine.ports import Transaction
from canaryguard.engine.unit import Ports

__all__ = ["LEASE", "Leadership"]

log = logging.getLogger("canaryguard.leadership")

LEASE = "controller"
TTL = timedelta(seconds=10)
# this replica trusts its lease for this share of the ttl only (counted from before the claim):
# the rest covers clocks that run at slightly different speeds
TRUST = 0.8


class Leadership:
    """This replica's claim on the controller lease."""

    def __init__(
        self,
        ports: Ports,
        *,
        fenced_actors: frozenset[str],
        holder: str | None = None,
        ttl: timedelta = TTL,
    ) -> None:
        self._ports = ports
        self.fenced_actors = fenced_actors
        self.holder = holder or secrets.token_hex(8)
        self.ttl = ttl
        self.epoch: int | None = None
        self._trusted_until = 0.0

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the lease, as far as it knows now."""
        return self.epoch is not None and self._ports.clock.monotonic() < self._trusted_until

    async def hold(self) -> bool:
        """Claim or renew the lease (called every tick); whether this replica leads."""
        clock = self._ports.clock
        started, now = clock.monotonic(), clock.now()
        try:
            async with self._ports.store.write(exclusive=False) as tx:
                epoch = await tx.leases.claim(
                    LEASE, holder=self.holder, now=now, until=now + self.ttl
                )
        except Exception:
            log.exception("cannot claim or renew the controller lease")
            return self.is_leader  # unchanged: a held lease runs out by itself
        if epoch is None:
            if self.epoch is not None:
                log.warning("lost the controller lease (epoch %d) to another replica", self.epoch)
            self.epoch = None
            return False
        if epoch != self.epoch:
            log.info("this replica (%s) leads: controller lease epoch %d", self.holder, epoch)
        self.epoch = epoch
        self._trusted_until = started + self.ttl.total_seconds() * TRUST
        return True

    async def fence(self, tx: Transaction, actor: str) -> None:
        """Refuse a change by a controller actor unless this replica still holds the lease at
        its epoch (checked, and the lease locked, inside the change's own transaction)."""
        if actor not in self.fenced_actors:
            return
        current = await tx.leases.holder(LEASE)
        if self.epoch is None or current != (self.holder, self.epoch):
            held = f"held by {current[0]} at epoch {current[1]}" if current else "not held"
            raise NotLeader(
                f"this replica does not hold the controller lease (it is {held}); "
                "the leading replica acts"
            )

    async def release(self) -> None:
        """Let the lease expire now (a clean stop), so another replica takes over at once."""
        if self.epoch is None:
            return
        self.epoch = None
        try:
            async with self._ports.store.write(exclusive=False) as tx:
                await tx.leases.release(LEASE, holder=self.holder, at=self._ports.clock.now())
        except Exception:
            log.exception("cannot release the controller lease; it expires by itself")
