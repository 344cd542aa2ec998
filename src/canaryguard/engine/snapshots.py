"""Snapshots: capture, seal (encrypt), retain, read back, diff, re-encrypt."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping

from canaryguard.domain.conditions import STORED_CONTEXT
from canaryguard.domain.diff import Change, diff_values
from canaryguard.domain.errors import IntegrityError, InvalidInput, NotFound
from canaryguard.domain.events import SnapshotCreated
from canaryguard.domain.models import (
    Deployment,
    MetricsSnapshot,
    PolicyDocument,
    PolicyRef,
    Snapshot,
    SnapshotInfo,
    SnapshotKind,
)
from canaryguard.engine.observations import metrics_snapshot
from canaryguard.engine.ports import SealedSnapshot, Transaction
from canaryguard.engine.unit import Ports, Unit, check_text, new_id, unit_of_work

__all__ = ["SnapshotService"]

MAX_METADATA_ENTRIES = 64
REENCRYPT_BATCH = 200


def _associated_data(snapshot_id: str, deployment: str) -> bytes:
    # binds the ciphertext to its record: a blob copied onto another snapshot does not open
    return f"canaryguard/snapshot/v1\x00{snapshot_id}\x00{deployment}".encode()


class PolicyDocuments:
    """Policy documents by reference, cached: versions are immutable and never deleted, so a
    document read once is the document forever (and a rollback need not read it again)."""

    def __init__(self, capacity: int = 4_096) -> None:
        self._capacity = capacity
        self._cache: dict[PolicyRef, PolicyDocument] = {}

    async def get(self, tx: Transaction, ref: PolicyRef) -> PolicyDocument:
        cached = self._cache.get(ref)
        if cached is not None:
            return cached
        version = await tx.policies.get(ref.name, ref.version)
        if version is None or version.content_hash != ref.content_hash:
            raise IntegrityError(
                f"policy {ref} is missing or its content changed ({ref.content_hash})"
            )
        document = PolicyDocument(ref=ref, document=version.document)
        if len(self._cache) >= self._capacity:
            self._cache.pop(next(iter(self._cache)))
        self._cache[ref] = document
        return document


class SnapshotService:
    """Every state a deployment had, kept encrypted and restorable exactly."""

    def __init__(self, ports: Ports) -> None:
        self._ports = ports
        self.documents = PolicyDocuments()

    # -- sealing ---------------------------------------------------------------------------
    def seal(self, snapshot: Snapshot, *, seq: int, pinned: bool) -> SealedSnapshot:
        key_id, blob = self._ports.keys.encrypt(
            snapshot.model_dump_json().encode(),
            associated_data=_associated_data(snapshot.id, snapshot.deployment),
        )
        info = SnapshotInfo(
            id=snapshot.id,
            deployment=snapshot.deployment,
            seq=seq,
            created_at=snapshot.created_at,
            kind=snapshot.kind,
            revision=snapshot.revision,
            pinned=pinned,
            key_id=key_id,
        )
        return SealedSnapshot(info=info, blob=blob)

    def unseal(self, sealed: SealedSnapshot) -> Snapshot:
        info = sealed.info
        try:
            plaintext = self._ports.keys.decrypt(
                info.key_id, sealed.blob, associated_data=_associated_data(info.id, info.deployment)
            )
        except IntegrityError as exc:
            raise IntegrityError(f"snapshot {info.id} of {info.deployment}: {exc}") from exc
        snapshot = Snapshot.model_validate_json(plaintext, context=STORED_CONTEXT)
        if snapshot.id != info.id or snapshot.deployment != info.deployment:
            raise IntegrityError(f"snapshot {info.id} holds the body of another snapshot")
        return snapshot

    # -- capture ---------------------------------------------------------------------------
    async def capture(
        self,
        unit: Unit,
        deployment: Deployment,
        *,
        kind: SnapshotKind,
        note: str = "",
        pinned: bool = False,
        metadata: Mapping[str, str] | None = None,
        protect: Collection[str] = (),
        metrics: MetricsSnapshot | None = None,
    ) -> Snapshot:
        """Save ``deployment`` as it is, inside ``unit``'s transaction, then apply retention
        (``domain.retention`` states the rule). ``metrics`` saves a query when the caller has it.
        """
        tx = unit.tx
        snapshot = Snapshot(
            id=new_id("snap"),
            deployment=deployment.name,
            created_at=unit.now,
            kind=kind,
            actor=unit.actor,
            note=note,
            revision=deployment.revision,
            state=deployment.state,
            state_reason=deployment.state_reason,
            state_since=deployment.state_since,
            stable=await self.documents.get(tx, deployment.stable),
            canary=await self.documents.get(tx, deployment.canary)
            if deployment.canary is not None
            else None,
            split=deployment.split,
            config=deployment.config,
            baseline_snapshot_id=deployment.baseline_snapshot_id,
            metrics=metrics or metrics_snapshot(self._ports.windows, deployment, unit.now),
            metadata=dict(metadata or {}),
        )
        # the store numbers it (seq) and prunes in one statement each
        await tx.snapshots.append(self.seal(snapshot, seq=0, pinned=pinned))
        await unit.emit(
            SnapshotCreated(snapshot_id=snapshot.id, kind=kind, pinned=pinned),
            deployment=deployment.name,
            revision=deployment.revision,
        )
        protected = {snapshot.id, *protect}
        if deployment.baseline_snapshot_id is not None:
            protected.add(deployment.baseline_snapshot_id)
        dropped = await tx.snapshots.prune(
            deployment.name, keep=deployment.config.max_snapshots, protect=protected
        )
        unit.pruned.extend(dropped)  # recorded in the audit record of the change that did it
        return snapshot

    async def create(
        self,
        deployment: str,
        *,
        actor: str,
        note: str = "",
        pinned: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """Take a snapshot on demand."""
        note = check_text(note, "the note")
        checked = _check_metadata(metadata or {})
        async with unit_of_work(self._ports, actor) as unit:
            current = await unit.tx.deployments.get(deployment)
            if current is None:
                raise NotFound(f"no deployment named {deployment!r}")
            snapshot = await self.capture(
                unit, current, kind=SnapshotKind.MANUAL, note=note, pinned=pinned, metadata=checked
            )
            await unit.audit(
                "snapshot.create",
                deployment=deployment,
                reason=note or None,
                revision_before=current.revision,
                details={"snapshot_id": snapshot.id, "pinned": pinned},
            )
        return snapshot

    async def set_pinned(self, snapshot_id: str, *, pinned: bool, actor: str) -> SnapshotInfo:
        """Pin (retention never drops it) or unpin a snapshot."""
        async with unit_of_work(self._ports, actor) as unit:
            sealed = await unit.tx.snapshots.get(snapshot_id)
            if sealed is None:
                raise NotFound(f"no snapshot {snapshot_id!r}")
            await unit.tx.snapshots.set_pinned(snapshot_id, pinned=pinned)
            await unit.audit(
                "snapshot.pin" if pinned else "snapshot.unpin",
                deployment=sealed.info.deployment,
                details={"snapshot_id": snapshot_id},
            )
        return sealed.info.model_copy(update={"pinned": pinned})

    # -- reading ---------------------------------------------------------------------------
    async def load(self, tx: Transaction, snapshot_id: str) -> Snapshot:
        sealed = await tx.snapshots.get(snapshot_id)
        if sealed is None:
            raise NotFound(f"no snapshot {snapshot_id!r}")
        return self.unseal(sealed)

    async def get(self, snapshot_id: str) -> Snapshot:
        async with self._ports.store.read() as tx:
            return await self.load(tx, snapshot_id)

    async def info(self, snapshot_id: str) -> SnapshotInfo:
        async with self._ports.store.read() as tx:
            sealed = await tx.snapshots.get(snapshot_id)
        if sealed is None:
            raise NotFound(f"no snapshot {snapshot_id!r}")
        return sealed.info

    async def list(self, deployment: str) -> builtins.list[SnapshotInfo]:
        async with self._ports.store.read() as tx:
            if await tx.deployments.get(deployment) is None:
                raise NotFound(f"no deployment named {deployment!r}")
            return await tx.snapshots.of_deployment(deployment)

    async def diff(self, old_id: str, new_id_: str) -> builtins.list[Change]:
        """Every field that differs between two snapshots, documents included."""
        async with self._ports.store.read() as tx:
            old = await self.load(tx, old_id)
            new = await self.load(tx, new_id_)
        return diff_values(old.model_dump(mode="json"), new.model_dump(mode="json"))

    # -- keys ------------------------------------------------------------------------------
    async def reencrypt(self, *, actor: str) -> tuple[int, tuple[str, ...]]:
        """Re-encrypt every snapshot that is not under the primary key; returns how many, and
        the ids of those that do not open (changed in the store, or under a key no longer in
        the ring): they stay as they are, and the rest are re-encrypted all the same.

        Works in batches, each its own transaction, so a large store is never locked for long
        and an interrupted run simply continues next time.
        """
        primary = self._ports.keys.primary_key_id
        done = 0
        skipped: set[str] = set()
        while True:
            async with unit_of_work(self._ports, actor) as unit:
                listed = await unit.tx.snapshots.ids_not_under(
                    primary, limit=REENCRYPT_BATCH + len(skipped)
                )
                ids = [snapshot_id for snapshot_id in listed if snapshot_id not in skipped]
                moved = 0
                for snapshot_id in ids:
                    sealed = await unit.tx.snapshots.get(snapshot_id)
                    if sealed is None:
                        continue
                    try:
                        opened = self.unseal(sealed)
                    except IntegrityError:
                        skipped.add(snapshot_id)
                        continue
                    resealed = self.seal(opened, seq=sealed.info.seq, pinned=sealed.info.pinned)
                    await unit.tx.snapshots.replace_blob(
                        snapshot_id, key_id=resealed.info.key_id, blob=resealed.blob
                    )
                    moved += 1
                if ids:
                    await unit.audit(
                        "keys.reencrypt",
                        details={
                            "key_id": primary,
                            "snapshots": moved,
                            "not_opened": [i for i in ids if i in skipped],
                        },
                    )
            done += moved
            if len(ids) < REENCRYPT_BATCH:
                return done, tuple(sorted(skipped))


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata is a map of text to text")
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidInput(f"metadata has {len(metadata)} entries; at most {MAX_METADATA_ENTRIES}")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or len(key) > 128:
            raise InvalidInput(
                f"metadata entry {key!r}: keys and values are text, keys 1-128 characters"
            )
        check_text(key, "a metadata key")
        checked[key] = check_text(value, f"metadata {key!r}")
    return checked
