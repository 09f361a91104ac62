"""The consumer runtime's rebalance rules, driven by scripted clients (no broker): the readiness gauge
and its probe, a recovery failure stopping the stage, and a transactional batch fetched before a
rebalance being dropped while the commit in flight finishes first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY, start_http_server

from archlab.core.settings import Settings
from archlab.streaming.readiness import owns_partitions
from archlab.streaming.runtime import ASSIGNED_PARTITIONS, ConsumerStage, _fetch_min_bytes
from archlab.streaming.transactional import Fetched, TransactionalProcessor

TOPIC = "shop.raw"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def _records(tp: TopicPartition, *offsets: int) -> list[ConsumerRecord]:
    return [ConsumerRecord(tp.topic, tp.partition, o, 0, 0, b"k", b"v", None, 1, 1, []) for o in offsets]


class ScriptedConsumer:
    """``getmany`` answers from a script: a fetch result, or a coroutine to run before the next answer."""

    def __init__(self, *script: Fetched | Callable[[], Awaitable[None]]) -> None:
        self.script = list(script)

    async def getmany(self, timeout_ms: int, max_records: int) -> Fetched:
        while self.script:
            item = self.script.pop(0)
            if isinstance(item, dict):
                return item
            await item()
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class RecordingProducer:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self.events += [f"commit {tp.partition}@{offset}" for tp, offset in sorted(offsets.items())]


def _assigned(group: str, topic: str = TOPIC) -> float | None:
    return REGISTRY.get_sample_value("lab_assigned_partitions", {"group": group, "topic": topic})


class Idle(ConsumerStage):
    def __init__(self, recover: Callable[[TopicPartition], Awaitable[None]]) -> None:
        super().__init__(ScriptedConsumer(), group_id="idle")  # type: ignore[arg-type]
        self._recover = recover

    async def step(self) -> None:
        await asyncio.sleep(0.01)

    async def recover_partitions(self, assigned: Collection[TopicPartition]) -> None:
        for tp in assigned:
            await self._recover(tp)


async def test_the_gauge_shows_owned_partitions_from_assignment_on_even_while_recovery_waits() -> None:
    lake_back = asyncio.Event()
    stage = Idle(lambda tp: lake_back.wait())
    assigning = asyncio.create_task(stage.listener.on_partitions_assigned({TP0, TP1}))
    async with asyncio.timeout(5):  # the gauge is set before recovery, which waits for the lake
        while _assigned("idle") != 2:
            await asyncio.sleep(0.01)
    assert not assigning.done()
    lake_back.set()
    await assigning
    assert stage.is_ready(TP0) and stage.is_ready(TP1)
    await stage.listener.on_partitions_revoked({TP0, TP1})
    assert _assigned("idle") == 0 and not stage.is_ready(TP0)


async def test_a_failed_recovery_stops_the_stage_instead_of_being_logged_and_skipped() -> None:
    async def broken(tp: TopicPartition) -> None:
        raise RuntimeError("changelog unreadable")

    stage = Idle(broken)
    await stage.listener.on_partitions_assigned({TP0})
    assert not stage.is_ready(TP0)
    with pytest.raises(RuntimeError, match="changelog unreadable"):
        await asyncio.wait_for(stage.run(asyncio.Event()), 5)


class Recorder(TransactionalProcessor):
    prepare_ahead = True

    def __init__(self, consumer: ScriptedConsumer, events: list[str], rebalance_begun: asyncio.Event) -> None:
        super().__init__(consumer, RecordingProducer(events), group_id="g", max_batch=100)  # type: ignore[arg-type]
        self.events = events
        self._first_commit_done = asyncio.Event()
        self._rebalance_begun = rebalance_begun

    async def emit(self, prepared: Any) -> None:
        self.events += [f"emit {tp.partition}@{records[0].offset}" for tp, records in prepared.items()]
        if not self._first_commit_done.is_set():
            await self._rebalance_begun.wait()  # the next batch is fetched ahead and a rebalance begins meanwhile

    def forget(self, revoked: list[TopicPartition]) -> None:
        self.events.append("released")

    def committed(self) -> None:
        if any(event.startswith("commit") for event in self.events):
            self._first_commit_done.set()


async def test_a_batch_fetched_before_a_rebalance_is_dropped_and_read_again_after_it() -> None:
    events: list[str] = []
    stop = asyncio.Event()
    rebalancing: list[asyncio.Task[None]] = []

    rebalance_begun = asyncio.Event()

    async def rebalance() -> None:
        rebalance_begun.set()  # the revocation below queues behind the commit in flight before emit resumes
        await processor.listener.on_partitions_revoked({TP0})
        await processor.listener.on_partitions_assigned({TP0})

    async def start_rebalance() -> None:  # the group rebalances while the first batch commits
        rebalancing.append(asyncio.create_task(rebalance()))

    async def stop_soon() -> None:
        stop.set()

    consumer = ScriptedConsumer(
        {TP0: _records(TP0, 0, 1)},  # committed before the rebalance
        start_rebalance,
        {TP0: _records(TP0, 2, 3)},  # fetched ahead, before the rebalance: dropped
        {TP0: _records(TP0, 2, 3)},  # read again from the committed offset by the new assignment
        stop_soon,
    )
    processor = Recorder(consumer, events, rebalance_begun)
    await processor.listener.on_partitions_assigned({TP0})
    await asyncio.wait_for(processor.run(stop), 10)
    await asyncio.gather(*rebalancing)
    assert events == ["emit 0@0", "commit 0@2", "released", "emit 0@2", "commit 0@4"]


def test_readiness_is_read_from_the_metrics_endpoint_and_is_false_while_nothing_answers() -> None:
    server, thread = start_http_server(0, addr="127.0.0.1")
    port = server.server_address[1]
    try:
        ASSIGNED_PARTITIONS.labels("probe", "orders.gold-shuffle").set(3)
        ASSIGNED_PARTITIONS.labels("probe", "orders.raw").set(0)
        assert owns_partitions(port, r"\.gold-shuffle")
        assert not owns_partitions(port, r"\.raw")  # assigned once, revoked since
    finally:
        server.shutdown()
        thread.join()
    assert not owns_partitions(port, r"\.gold-shuffle")  # a service not (or no longer) answering


def test_only_stages_reading_raw_topics_wait_for_a_minimum_of_bytes() -> None:
    """Raw topics are written a record at a time; every other topic a transaction at a time, which its
    readers take as it commits (a minimum made a skewed backlog wait out the deadline on every fetch)."""
    settings = Settings(s3_access_key="k", s3_secret_key="s", batch_min_bytes=4096)  # type: ignore[arg-type]
    assert _fetch_min_bytes(settings, ["orders.raw", "sensors.raw"]) == 4096
    assert _fetch_min_bytes(settings, ["orders.silver", "sensors.silver"]) == 1
    assert _fetch_min_bytes(settings, ["orders.gold-shuffle"]) == 1
