"""Consume, transform, produce: one Kafka transaction per consumed batch.

silver_refiner and both stages of gold_aggregator are this loop with different steps. Inside
ONE transaction a batch's output records and its consumed offsets
(``send_offsets_to_transaction``) are written, so a crash at any moment leaves all of it or
none of it; downstream readers use ``read_committed``.

A processor with state (de-duplication keys, windows) restores a partition's state when the
partition is assigned; no record of that partition is processed before, and a failed restore
stops the service (aiokafka would only log an exception raised in a rebalance callback).
Offsets are never sought in the assignment callback: the consumer's own position is the
committed offset, and seeking there from the callback was seen to re-deliver records after a
``kill -9`` of a predecessor. A batch fetched before a rebalance is dropped, not committed: the new
assignment reads again from the committed offsets.

The transactional id is stable per instance (``LAB_INSTANCE_ID``), so a restarted instance fences
its dead predecessor and aborts its open transaction at once instead of blocking readers.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from archlab.core.settings import Settings
from archlab.kafka.clients import KeyedBatchSender, make_consumer, make_producer

log = structlog.get_logger(__name__)

Fetched = dict[TopicPartition, list[ConsumerRecord]]


@dataclass(slots=True)
class _Batch:
    """Records fetched together, the rebalance count when they were, and (prepared ahead) the result."""

    fetched: Fetched
    rebalances: int
    prepared: Any = None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, processor: TransactionalProcessor) -> None:
        self._processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._processor.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._processor.recover(assigned)


class TransactionalProcessor(ABC):
    """The batch loop; subclasses say how a batch is prepared and emitted and how state is kept."""

    prepare_ahead = False
    """True when ``prepare`` reads no state: the next batch is then fetched and prepared while the
    current one commits (silver refines on one core while the other sends and commits)."""

    def __init__(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, *, group_id: str, max_batch: int
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.group_id = group_id
        self.max_batch = max_batch
        self.lock = asyncio.Lock()
        self.listener = _Rebalance(self)
        self.senders: dict[str, KeyedBatchSender] = {}
        self._ready: set[TopicPartition] = set()  # assigned and state restored
        self._rebalances = 0  # revocations so far: a batch fetched before one is stale
        self._fatal: BaseException | None = None

    async def open_senders(self, topics: list[str]) -> None:
        """A batching sender per output topic; ``flush`` of all of them ends every transaction."""
        for topic in topics:
            self.senders[topic] = await KeyedBatchSender.for_topic(self.producer, topic)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, process and commit batch after batch until ``stop``."""
        ahead: asyncio.Task[_Batch | None] | None = None
        try:
            while not stop.is_set():
                batch = await (ahead if ahead is not None else self._fetch())
                ahead = asyncio.create_task(self._fetch()) if self.prepare_ahead else None
                if batch is not None:
                    await self._commit_when_ready(batch)
        finally:
            if ahead is not None:  # fetched, not committed: read again by whoever owns it next
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _fetch(self) -> _Batch | None:
        fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        fetched = {tp: records for tp, records in fetched.items() if records}
        if not fetched:
            return None
        batch = _Batch(fetched, self._rebalances)
        if self.prepare_ahead:
            batch.prepared = await self.prepare(fetched)
        return batch

    async def _commit_when_ready(self, batch: _Batch) -> None:
        """Commit once every partition of the batch has its state; drop the batch if a rebalance came
        since it was fetched (the new assignment reads again from the committed offsets, so
        committing it would process its records twice)."""
        while True:
            if self._fatal is not None:
                raise self._fatal
            async with self.lock:  # a rebalance waits for the batch in flight
                if self._rebalances != batch.rebalances:
                    return
                if self._ready.issuperset(batch.fetched):
                    prepared = batch.prepared if self.prepare_ahead else await self.prepare(batch.fetched)
                    await self._commit(batch.fetched, prepared)
                    return
            await asyncio.sleep(0.05)  # a partition's state is still being restored: keep its records

    async def _commit(self, fetched: Fetched, prepared: Any) -> None:
        async with self.producer.transaction():
            await self.emit(prepared)
            for sender in self.senders.values():
                _, errors = await sender.flush()
                if errors:
                    raise errors[0]
            offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items()}
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
        self.committed()

    async def release(self, revoked: list[TopicPartition]) -> None:
        """On revocation: the batch in flight commits first, then the partitions' state is dropped."""
        async with self.lock:
            self._rebalances += 1
            self._ready.difference_update(revoked)
            self.forget(revoked)

    async def recover(self, assigned: list[TopicPartition]) -> None:
        """On assignment: restore each partition's state before any of its records is processed."""
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        async with self.lock:
            try:
                for tp in assigned:
                    await self.restore(tp)
                    self._ready.add(tp)
            except Exception as exc:  # without its state a partition must not run
                self._fatal = exc
            self.committed()

    # --- the steps ---------------------------------------------------------------------------
    async def prepare(self, fetched: Fetched) -> Any:
        """Work done before the transaction opens (e.g. vectorised transformation off the loop)."""
        return fetched

    @abstractmethod
    async def emit(self, prepared: Any) -> None:
        """Queue the batch's output on ``self.senders`` (inside the transaction)."""

    async def restore(self, tp: TopicPartition) -> None:
        """Rebuild an assigned partition's state from its changelog (stateless: nothing)."""

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Drop the state of revoked partitions (stateless: nothing)."""

    def committed(self) -> None:
        """After a commit or a restore (e.g. to update gauges)."""


async def run_transactional(
    settings: Settings,
    make: Callable[[AIOKafkaConsumer, AIOKafkaProducer], TransactionalProcessor],
    topics: list[str],
    group: str,
    stop: asyncio.Event,
) -> None:
    """Run one processor, made by ``make``, over ``topics`` in ``group`` until ``stop``; its
    transactional id is ``<group>-<instance id>``."""
    producer = make_producer(settings, transactional_id=f"{group}-{settings.instance_id}", transaction_timeout_ms=20_000)
    consumer = make_consumer(settings, group_id=group)
    await producer.start()  # fences a dead predecessor with the same id, aborting its open transaction
    processor = make(consumer, producer)
    consumer.subscribe(topics, listener=processor.listener)
    await consumer.start()
    try:
        await processor.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
