"""Events: the bus never blocks a writer, counts what slow subscribers miss; followers catch up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from canaryguard.adapters.bus import InProcessBus
from canaryguard.domain.events import EVENT_TYPE_PREFIX, EventRecord, SplitChanged, event_adapter
from canaryguard.engine.app import CanaryGuard
from tests.helpers import ACTOR, V1, seed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(seq: int) -> EventRecord:
    return EventRecord(
        seq=seq,
        deployment="d",
        time=T0,
        revision=seq,
        event=SplitChanged(from_percentage=0, to_percentage=1),
    )


def test_every_event_type_has_the_canaryguard_prefix() -> None:
    mapping = event_adapter.json_schema()["discriminator"]["mapping"]
    assert len(mapping) == 16
    assert all(name.startswith(EVENT_TYPE_PREFIX) for name in mapping)


def test_event_json_round_trips() -> None:
    original = record(7)
    assert EventRecord.model_validate_json(original.model_dump_json()) == original


def test_cloudevent_envelope_has_the_required_attributes() -> None:
    envelope = record(42).to_cloudevent()
    assert envelope["specversion"] == "1.0"
    assert (envelope["id"], envelope["source"], envelope["subject"]) == (
        "42",
        "/deployments/d",
        "d",
    )
    assert envelope["type"] == "io.canaryguard.split.changed"
    assert envelope["time"] == "2026-01-01T00:00:00Z"
    assert envelope["data"] == {"from_percentage": 0.0, "to_percentage": 1.0}


def test_slow_subscriber_never_blocks_and_its_drops_are_counted() -> None:
    bus = InProcessBus()
    slow = bus.subscribe(maxsize=2)
    fast = bus.subscribe(maxsize=100)
    bus.publish([record(i) for i in range(1, 11)])
    assert (slow.dropped, fast.dropped, bus.dropped_total) == (8, 0, 8)


async def test_every_subscriber_gets_every_event() -> None:
    bus = InProcessBus()
    subs = [bus.subscribe() for _ in range(3)]
    bus.publish([record(1), record(2)])
    for sub in subs:
        assert [(await sub.get()).seq for _ in range(2)] == [1, 2]


async def test_follower_reads_the_log_then_live_events(app: CanaryGuard) -> None:
    await seed(app)
    follower = app.events.follow(deployment="shop/security")
    first = await anext(follower)
    await app.deployments.start_canary("shop/security", policy="sec@2", percent=5, actor=ACTOR)
    rest = [await asyncio.wait_for(anext(follower), 5) for _ in range(2)]
    await follower.aclose()
    assert [e.type for e in [first, *rest]] == [
        "io.canaryguard.deployment.created",
        "io.canaryguard.snapshot.created",
        "io.canaryguard.canary.started",
    ]


async def test_follower_that_fell_behind_catches_up_from_the_log(app: CanaryGuard) -> None:
    await seed(app)
    await app.deployments.start_canary("shop/security", policy="sec@2", percent=1, actor=ACTOR)
    start = (await app.events.read())[-1].seq
    follower = app.events.follow(after_seq=start)
    pending = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0)  # the follower is subscribed and waiting
    for percent in range(2, 1100 + 2):  # more than the follower's queue holds (1024)
        await app.deployments.set_split("shop/security", percent=percent / 100, actor=ACTOR)
    seqs = [(await pending).seq]
    while len(seqs) < 1100:
        seqs.append((await asyncio.wait_for(anext(follower), 10)).seq)
    await follower.aclose()
    assert seqs == list(range(start + 1, start + 1101))


async def test_concurrent_writers_in_one_process_publish_in_sequence_order(
    app: CanaryGuard,
) -> None:
    await seed(app)
    await app.deployments.create("shop/other", stable="sec@1", actor=ACTOR)
    for name in ("shop/security", "shop/other"):
        await app.deployments.start_canary(name, policy="sec@2", percent=1, actor=ACTOR)
    subscription = app.ports.bus.subscribe()
    await asyncio.gather(
        *(
            app.deployments.set_split(name, percent=2 + i, actor=ACTOR)
            for i in range(10)
            for name in ("shop/security", "shop/other")
        )
    )
    seqs = [(await subscription.get()).seq for _ in range(20)]
    assert seqs == sorted(seqs)


async def drain(subscription: Any) -> list[int]:
    """The sequence numbers waiting in ``subscription``, in order."""
    seqs = []
    while True:
        try:
            seqs.append((await asyncio.wait_for(subscription.get(), 0.05)).seq)
        except TimeoutError:
            return seqs


async def test_a_replica_relays_what_another_committed(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await app.events.start_relay()
    live = app.ports.bus.subscribe()
    await other_replica.policies.publish("sec", V1, actor=ACTOR)
    assert await app.events.relay() == 1
    [event] = await app.events.read()
    assert await drain(live) == [event.seq]
    assert await app.events.relay() == 0  # once


async def test_a_local_change_after_a_remote_one_reaches_the_bus_in_sequence_order(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await app.policies.publish("sec", V1, actor=ACTOR)  # the bus has a position
    live = app.ports.bus.subscribe()
    await other_replica.policies.publish("sec", V1 | {"v": 2}, actor=ACTOR)
    await app.policies.publish("sec", V1 | {"v": 3}, actor=ACTOR)  # no relay round between
    assert await drain(live) == [e.seq for e in await app.events.read()][1:]


async def test_local_only_subscribers_do_not_get_relayed_events(
    app: CanaryGuard, other_replica: CanaryGuard
) -> None:
    await app.events.start_relay()
    local = app.ports.bus.subscribe(relayed=False)
    await other_replica.policies.publish("sec", V1, actor=ACTOR)
    await app.events.relay()
    await app.policies.publish("sec", V1 | {"v": 2}, actor=ACTOR)
    assert await drain(local) == [(await app.events.read())[-1].seq]
