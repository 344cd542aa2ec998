"""Snapshots: exact round trips, encryption at rest, retention, diff, key rotation."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryguard.adapters.bus import InProcessBus
from canaryguard.adapters.clock import ManualClock
from canaryguard.adapters.crypto import AesGcmKeyRing
from canaryguard.adapters.store import SqlStore, open_store
from canaryguard.adapters.store.schema import snapshots
from canaryguard.domain.assignment import Criterion, Split
from canaryguard.domain.errors import IntegrityError, InvalidInput, NotFound
from canaryguard.domain.models import (
    DeploymentState,
    MetricsSnapshot,
    PolicyDocument,
    PolicyRef,
    RollbackConfig,
    RollbackKind,
    RollbackMode,
    RollbackRecord,
    RollbackStatus,
    Snapshot,
    SnapshotInfo,
    SnapshotKind,
    VariantMetrics,
)
from canaryguard.domain.retention import snapshots_to_drop
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.ports import SealedSnapshot
from canaryguard.engine.unit import Ports
from canaryguard.wiring import Settings, open_canaryguard
from tests.helpers import ACTOR, seed

NAME = "shop/security"

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_docs = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        json_leaf,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
refs = st.builds(
    PolicyRef,
    name=st.just("sec"),
    version=st.text("0123456789.", min_size=1, max_size=5),
    content_hash=st.just("sha256:x"),
)


@st.composite
def snapshot_bodies(draw: st.DrawFn) -> Snapshot:
    has_canary = draw(st.booleans())
    return Snapshot(
        id=draw(st.from_regex(r"snap-[0-9a-f]{16}", fullmatch=True)),
        deployment=NAME,
        created_at=draw(moments),
        kind=draw(st.sampled_from(SnapshotKind)),
        actor=draw(st.text(min_size=1, max_size=10)),
        note=draw(st.text(max_size=40)),
        revision=draw(st.integers(1, 10**9)),
        state=draw(st.sampled_from(DeploymentState)),
        state_reason=draw(st.none() | st.text(max_size=20)),
        state_since=draw(moments),
        stable=PolicyDocument(ref=draw(refs), document=draw(json_docs)),
        canary=PolicyDocument(ref=draw(refs), document=draw(json_docs)) if has_canary else None,
        split=Split(
            canary_basis_points=draw(st.integers(0, 10_000)),
            criterion=draw(st.sampled_from([Criterion.USER_ID, Criterion.IP, Criterion.RANDOM])),
            salt=draw(st.text(max_size=16)),
            canary_groups=tuple(sorted(draw(st.sets(st.text(min_size=1, max_size=5), max_size=3)))),
        ),
        config=RollbackConfig(max_snapshots=draw(st.integers(1, 100))),
        baseline_snapshot_id=draw(st.none() | st.just("snap-0000000000000000")),
        metrics=MetricsSnapshot(
            window_seconds=300,
            until=draw(moments),
            canary=VariantMetrics(
                requests=draw(st.integers(0, 10**6)),
                errors=0,
                latency_sum_ms=draw(st.floats(0, 1e9)),
            ),
        ),
        metadata=draw(
            st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3)
        ),
    )


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture
def sync_app(db_url: str, runner: asyncio.Runner) -> Iterator[CanaryGuard]:
    """canaryguard on a real database for synchronous (hypothesis) tests."""

    store = runner.run(open_store(db_url))
    guard = CanaryGuard(
        Ports(store=store, bus=InProcessBus(), clock=ManualClock(), keys=AesGcmKeyRing.generate())
    )
    yield guard
    runner.run(guard.close())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=snapshot_bodies())
def test_snapshot_round_trips_exactly_through_encryption_and_the_store(
    sync_app: CanaryGuard, runner: asyncio.Runner, body: Snapshot
) -> None:
    sealed = sync_app.snapshots.seal(body, seq=1, pinned=False)

    async def store_and_load() -> Snapshot:
        async with sync_app.ports.store.write() as tx:
            await tx.snapshots.delete([i.id for i in await tx.snapshots.of_deployment(NAME)])
            await tx.snapshots.insert(sealed)
        return await sync_app.snapshots.get(body.id)

    assert runner.run(store_and_load()) == body


async def test_snapshot_body_is_not_stored_in_clear_text(app: CanaryGuard) -> None:
    await seed(app)
    snapshot = await app.snapshots.create(NAME, actor=ACTOR, note="secret-note-marker")
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.connect() as conn:
        blob = (
            await conn.execute(sa.select(snapshots.c.blob).where(snapshots.c.id == snapshot.id))
        ).scalar_one()
    assert b"secret-note-marker" not in bytes(blob)
    assert b"rate_limit" not in bytes(blob)


async def test_restoring_a_snapshot_gives_back_the_saved_documents(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    snapshot = await app.snapshots.create(
        NAME, actor=ACTOR, note="mid-canary", metadata={"ticket": "OPS-1"}
    )
    loaded = await app.snapshots.get(snapshot.id)
    assert loaded == snapshot
    assert loaded.canary is not None
    assert loaded.canary.document == (await app.policies.get("sec@2")).document
    assert loaded.metadata == {"ticket": "OPS-1"}


async def _tamper(app: CanaryGuard, snapshot_id: str, **values: object) -> None:
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.begin() as conn:
        await conn.execute(snapshots.update().where(snapshots.c.id == snapshot_id).values(**values))


async def _blob(app: CanaryGuard, snapshot_id: str) -> bytes:
    store = app.ports.store
    assert isinstance(store, SqlStore)
    async with store.engine.connect() as conn:
        query = sa.select(snapshots.c.blob).where(snapshots.c.id == snapshot_id)
        return bytes((await conn.execute(query)).scalar_one())


async def test_tampered_snapshot_gives_an_integrity_error_and_others_stay_readable(
    app: CanaryGuard,
) -> None:
    await seed(app)
    first = await app.snapshots.create(NAME, actor=ACTOR, note="one")
    second = await app.snapshots.create(NAME, actor=ACTOR, note="two")
    blob = bytearray(await _blob(app, first.id))
    blob[20] ^= 0x01
    await _tamper(app, first.id, blob=bytes(blob))
    with pytest.raises(IntegrityError, match=f"snapshot {first.id}"):
        await app.snapshots.get(first.id)
    assert (await app.snapshots.get(second.id)).note == "two"


async def test_blob_copied_from_another_snapshot_does_not_open(app: CanaryGuard) -> None:
    await seed(app)
    first = await app.snapshots.create(NAME, actor=ACTOR, note="one")
    second = await app.snapshots.create(NAME, actor=ACTOR, note="two")
    await _tamper(app, first.id, blob=await _blob(app, second.id))
    with pytest.raises(IntegrityError, match="changed, copied from another record"):
        await app.snapshots.get(first.id)


async def test_snapshot_under_an_unknown_key_names_the_key(app: CanaryGuard) -> None:
    await seed(app)
    snapshot = await app.snapshots.create(NAME, actor=ACTOR)
    await _tamper(app, snapshot.id, key_id="k-elsewhere")
    with pytest.raises(IntegrityError, match="no key 'k-elsewhere'"):
        await app.snapshots.get(snapshot.id)


async def test_wrong_key_ring_cannot_read_snapshots(app: CanaryGuard) -> None:
    await seed(app)
    snapshot = await app.snapshots.create(NAME, actor=ACTOR)
    foreign = AesGcmKeyRing(
        {app.ports.keys.primary_key_id: b"\x07" * 32}, app.ports.keys.primary_key_id
    )
    other = CanaryGuard(
        app.ports.__class__(
            store=app.ports.store, bus=app.ports.bus, clock=app.ports.clock, keys=foreign
        )
    )
    with pytest.raises(IntegrityError, match="does not authenticate"):
        await other.snapshots.get(snapshot.id)


async def _three_snapshots_with_a_key_file(
    app: CanaryGuard, tmp_path: Path
) -> tuple[AesGcmKeyRing, list[Snapshot]]:
    """A seeded deployment with three snapshots, its key ring kept in a key file (to rotate)."""
    await seed(app)
    ring = app.ports.keys
    assert isinstance(ring, AesGcmKeyRing)
    ring.path = tmp_path / "keys.json"
    created = [await app.snapshots.create(NAME, actor=ACTOR, note=str(i)) for i in range(3)]
    return ring, created


async def test_rotation_reencrypts_every_snapshot_under_the_new_key(
    app: CanaryGuard, tmp_path: Path
) -> None:
    ring, created = await _three_snapshots_with_a_key_file(app, tmp_path)
    old_key = ring.primary_key_id
    new_key, count, _ = await app.rotate_keys(actor=ACTOR)
    infos = await app.snapshots.list(NAME)
    assert (count, new_key != old_key) == (3, True)
    assert {info.key_id for info in infos} == {new_key}
    assert [(await app.snapshots.get(s.id)).note for s in created] == ["0", "1", "2"]
    reloaded = AesGcmKeyRing.load(tmp_path / "keys.json")
    assert set(reloaded.key_ids) == {old_key, new_key}


async def test_retention_keeps_max_snapshots_and_drops_the_oldest(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 3}, actor=ACTOR)
    made = [await app.snapshots.create(NAME, actor=ACTOR, note=str(i)) for i in range(5)]
    assert [info.id for info in await app.snapshots.list(NAME)] == [s.id for s in made[2:]]


async def test_retention_never_drops_a_pinned_snapshot(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 2}, actor=ACTOR)
    pinned = await app.snapshots.create(NAME, actor=ACTOR, pinned=True)
    for _ in range(4):
        await app.snapshots.create(NAME, actor=ACTOR)
    ids = [info.id for info in await app.snapshots.list(NAME)]
    assert pinned.id in ids
    assert len(ids) == 2


async def test_retention_never_drops_the_running_canarys_baseline(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 2}, actor=ACTOR)
    canary = await app.deployments.start_canary(NAME, policy="sec@2", percent=5, actor=ACTOR)
    for _ in range(4):
        await app.snapshots.create(NAME, actor=ACTOR)
    assert canary.baseline_snapshot_id in [info.id for info in await app.snapshots.list(NAME)]


async def test_retention_never_drops_a_snapshot_an_open_rollback_refers_to(
    app: CanaryGuard,
) -> None:

    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 2}, actor=ACTOR)
    target = await app.snapshots.create(NAME, actor=ACTOR)
    async with app.ports.store.write() as tx:
        await tx.rollbacks.insert(
            RollbackRecord(
                id="rb-open",
                deployment=NAME,
                kind=RollbackKind.MANUAL,
                mode=RollbackMode.STAGED,
                status=RollbackStatus.PENDING,
                target_snapshot_id=target.id,
                reason="waiting for confirmation",
                actor=ACTOR,
                created_at=app.ports.clock.now(),
                revision_before=2,
            )
        )
    for _ in range(4):
        await app.snapshots.create(NAME, actor=ACTOR)
    assert target.id in [info.id for info in await app.snapshots.list(NAME)]


async def test_unpinned_snapshot_becomes_eligible_for_retention(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 1}, actor=ACTOR)
    pinned = await app.snapshots.create(NAME, actor=ACTOR, pinned=True)
    await app.snapshots.set_pinned(pinned.id, pinned=False, actor=ACTOR)
    await app.snapshots.create(NAME, actor=ACTOR)
    assert pinned.id not in [info.id for info in await app.snapshots.list(NAME)]


async def test_diff_finds_every_changed_field(app: CanaryGuard) -> None:
    await seed(app)
    before = await app.snapshots.create(NAME, actor=ACTOR)
    await app.deployments.start_canary(NAME, policy="sec@2", percent=10, actor=ACTOR)
    after = await app.snapshots.create(NAME, actor=ACTOR, note="later")
    paths = {change.path for change in await app.snapshots.diff(before.id, after.id)}
    assert {"/state", "/split/canary_basis_points", "/canary", "/note", "/revision", "/id"} <= paths


async def test_unknown_snapshot_is_not_found(app: CanaryGuard) -> None:
    with pytest.raises(NotFound, match="no snapshot 'snap-nope'"):
        await app.snapshots.get("snap-nope")


async def test_rotation_with_env_keys_reencrypts_under_the_newest_env_key(
    app: CanaryGuard, db_url: str, tmp_path: Path
) -> None:
    await seed(app)
    made = await app.snapshots.create(NAME, actor=ACTOR, note="old key")
    old = app.ports.keys
    assert isinstance(old, AesGcmKeyRing)
    new_key = base64.b64encode(b"n" * 32).decode()
    env = ",".join(f"{kid}:{base64.b64encode(old._keys[kid]).decode()}" for kid in old.key_ids)
    restarted = await open_canaryguard(
        Settings(data_dir=tmp_path / "env", db_url=db_url, keys_env=f"{env},k-new:{new_key}")
    )
    try:
        key_id, count, _ = await restarted.rotate_keys(actor=ACTOR)
        assert (key_id, count) == ("k-new", 1)
        assert (await restarted.snapshots.info(made.id)).key_id == "k-new"
        assert (await restarted.snapshots.get(made.id)).note == "old key"
    finally:
        await restarted.close()


async def test_missing_key_file_next_to_old_snapshots_refuses_to_start(
    app: CanaryGuard, db_url: str, tmp_path: Path
) -> None:
    await seed(app)
    await app.snapshots.create(NAME, actor=ACTOR)
    with pytest.raises(InvalidInput, match=r"key file .* is missing"):
        await open_canaryguard(Settings(data_dir=tmp_path / "elsewhere", db_url=db_url))
    assert not (tmp_path / "elsewhere" / "keys.json").exists()


async def test_retention_is_recorded_in_the_changes_audit_record(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.configure(NAME, changes={"max_snapshots": 1}, actor=ACTOR)
    first = await app.snapshots.create(NAME, actor=ACTOR)
    await app.snapshots.create(NAME, actor=ACTOR)
    last = (await app.audit.list())[-1]
    assert (last.action, last.details["pruned_snapshots"]) == ("snapshot.create", [first.id])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pinned=st.lists(st.booleans(), min_size=0, max_size=12),
    keep=st.integers(1, 8),
    protected_at=st.sets(st.integers(0, 11), max_size=4),
)
def test_store_pruning_follows_the_domain_retention_rule(
    sync_app: CanaryGuard,
    runner: asyncio.Runner,
    pinned: list[bool],
    keep: int,
    protected_at: set[int],
) -> None:
    infos = [
        SnapshotInfo(
            id=f"snap-{i:016x}",
            deployment=NAME,
            seq=i + 1,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            kind=SnapshotKind.MANUAL,
            revision=1,
            pinned=flag,
            key_id="k",
        )
        for i, flag in enumerate(pinned)
    ]
    protected = {infos[i].id for i in protected_at if i < len(infos)}
    expected = sorted(snapshots_to_drop(infos, keep=keep, protected=protected))

    async def prune() -> list[str]:
        async with sync_app.ports.store.write() as tx:
            await tx.snapshots.delete([i.id for i in await tx.snapshots.of_deployment(NAME)])
            for info in infos:
                await tx.snapshots.insert(SealedSnapshot(info=info, blob=b"x" * 40))
            return await tx.snapshots.prune(NAME, keep=keep, protect=protected)

    assert runner.run(prune()) == expected


async def test_a_snapshot_that_does_not_open_is_left_and_the_rest_reencrypted(
    app: CanaryGuard, tmp_path: Path
) -> None:
    _, created = await _three_snapshots_with_a_key_file(app, tmp_path)
    bad = max(s.id for s in created)  # the last one the batch reaches
    blob = bytearray(await _blob(app, bad))
    blob[20] ^= 0x01
    await _tamper(app, bad, blob=bytes(blob))
    new_key, count, not_opened = await app.rotate_keys(actor=ACTOR)
    infos = {info.id: info.key_id for info in await app.snapshots.list(NAME)}
    assert (count, not_opened) == (len(infos) - 1, (bad,))
    assert {key for snapshot_id, key in infos.items() if snapshot_id != bad} == {new_key}
