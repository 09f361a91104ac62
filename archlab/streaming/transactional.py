"""Consume, transform, produce: one Kafka transaction per consumed batch.

silver_refiner and both stages of gold_aggregator are this loop with different steps, on the consumer
runtime (:mod:`archlab.streaming.runtime`: lifecycle, rebalances, fatal errors, crashes). Inside ONE
transaction a batch's output records and its consumed offsets (``send_offsets_to_transaction``) are
written, so a crash at any moment leaves all of it or none of it; downstream readers use
``read_committed``.

A batch is committed only once every partition it holds has its state restored, and only if no
rebalance began since it was fetched: the new assignment reads again from the committed offsets, so
committing a stale batch would process its records twice; it is dropped instead. A failed transaction
is not retried: it ends the stage (see the runtime).

The transactional id is stable per instance (``LAB_INSTANCE_ID``), so a restarted instance fences
its dead predecessor and aborts its open transaction at once instead of blocking readers.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Histogram

from archlab.core.settings import Settings
from archlab.kafka.clients import KeyedBatchSender
from archlab.streaming.runtime import ConsumerStage, run_stage

Fetched = dict[TopicPartition, list[ConsumerRecord]]

BATCH_PHASE_SECONDS = Histogram(
    "lab_batch_phase_seconds",
    "Where a transactional stage's batch spends its time: prepare (transforming, off the event loop) and "
    "transaction (emit, flush, offsets, commit). A record waits about one batch in the fetch buffer, then both",
    ["group", "phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RECORDS = Histogram("lab_batch_records", "Records in one committed batch of a transactional stage", ["group"],
                          buckets=(1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000))


@dataclass(slots=True)
class _Batch:
    """Records fetched together, the runtime's generation when they were, and (prepared ahead) the result."""

    fetched: Fetched
    generation: int
    prepared: Any = None


class TransactionalProcessor(ConsumerStage):
    """The batch loop; subclasses say how a batch is prepared and emitted and how state is kept."""

    prepare_ahead = False
    """True when ``prepare`` reads no state: the next batch is then fetched and prepared while the
    current one commits (silver refines on one core while the other sends and commits)."""

    def __init__(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, *, group_id: str, max_batch: int
    ) -> None:
        super().__init__(consumer, group_id=group_id)
        self.producer = producer
        self.max_batch = max_batch
        self.senders: dict[str, KeyedBatchSender] = {}
        self._ahead: asyncio.Task[_Batch | None] | None = None

    async def open_senders(self, topics: list[str]) -> None:
        """A batching sender per output topic; ``flush`` of all of them ends every transaction."""
        for topic in topics:
            self.senders[topic] = await KeyedBatchSender.for_topic(self.producer, topic)

    # --- the loop ----------------------------------------------------------------------------
    async def step(self) -> None:
        """Commit one batch (fetching the next one meanwhile when ``prepare_ahead``)."""
        batch = await (self._ahead if self._ahead is not None else self._fetch())
        self._ahead = asyncio.create_task(self._fetch()) if self.prepare_ahead else None
        if batch is not None:
            await self._commit_when_ready(batch)

    async def close(self) -> None:
        """Drop a batch fetched ahead: not committed, it is read again by whoever owns it next."""
        if self._ahead is not None:
            self._ahead.cancel()
            await asyncio.gather(self._ahead, return_exceptions=True)
            self._ahead = None

    async def _fetch(self) -> _Batch | None:
        fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        fetched = {tp: records for tp, records in fetched.items() if records}
        if not fetched:
            return None
        batch = _Batch(fetched, self.generation)
        if self.prepare_ahead:
            batch.prepared = await self._timed_prepare(fetched)
        return batch

    async def _timed_prepare(self, fetched: Fetched) -> Any:
        started = time.perf_counter()
        prepared = await self.prepare(fetched)
        BATCH_PHASE_SECONDS.labels(self.group_id, "prepare").observe(time.perf_counter() - started)
        return prepared

    async def _commit_when_ready(self, batch: _Batch) -> None:
        """Commit once every partition of the batch has its state, unless a rebalance came since it
        was fetched (then the batch is dropped); a rebalance waits for the commit."""
        async with self.holding(batch.fetched, batch.generation) as current:
            if current:
                prepared = batch.prepared if self.prepare_ahead else await self._timed_prepare(batch.fetched)
                started = time.perf_counter()
                await self._commit(batch.fetched, prepared)
                BATCH_PHASE_SECONDS.labels(self.group_id, "transaction").observe(time.perf_counter() - started)
                BATCH_RECORDS.labels(self.group_id).observe(sum(map(len, batch.fetched.values())))

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

    # --- rebalance hooks (the runtime's names for this stage's steps) ------------------------
    async def recover_partitions(self, assigned: Collection[TopicPartition]) -> None:
        await self.restore(sorted(assigned))

    async def release_partitions(self, revoked: Collection[TopicPartition]) -> None:
        self.forget(list(revoked))

    def after_assignment(self) -> None:
        self.committed()

    # --- the steps ---------------------------------------------------------------------------
    async def prepare(self, fetched: Fetched) -> Any:
        """Work done before the transaction opens (e.g. vectorised transformation off the loop)."""
        return fetched

    @abstractmethod
    async def emit(self, prepared: Any) -> None:
        """Queue the batch's output on ``self.senders`` (inside the transaction)."""

    async def restore(self, assigned: list[TopicPartition]) -> None:
        """Rebuild the state of the partitions just assigned from their changelog (stateless: nothing)."""

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Drop the state of revoked partitions (stateless: nothing)."""

    def committed(self) -> None:
        """After a commit or an assignment (e.g. to update gauges)."""


async def run_transactional(
    settings: Settings,
    make: Callable[[AIOKafkaConsumer, AIOKafkaProducer], TransactionalProcessor],
    topics: list[str],
    group: str,
    stop: asyncio.Event,
) -> None:
    """Run one processor, made by ``make``, over ``topics`` in ``group`` until ``stop``; its
    transactional id is ``<group>-<instance id>``."""

    def processor(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer | None) -> TransactionalProcessor:
        assert producer is not None, "run_stage(transactional=True) always passes a producer"
        return make(consumer, producer)

    await run_stage(settings, processor, topics, group, stop, transactional=True)
