"""The consumer runtime under every stage that reads Kafka: its lifecycle, its rebalance rules, its commits.

Two kinds of stage run on it, and both give every input record exactly-once effect:

* a **lake sink** (:class:`archlab.streaming.lake_sink.LakeSink`) commits records to Delta tables, each
  commit carrying the partition's last offset as an application transaction, and then reports that offset
  to the consumer group (for lag only: the tables' transaction versions are the truth);
* a **transactional stage** (:class:`archlab.streaming.transactional.TransactionalProcessor`) writes its
  output records and its input offsets in one Kafka transaction.

Lifecycle (:func:`run_stage`)
    A transactional stage's producer starts first: registering its transactional id
    (``<group>-<instance id>``) fences a dead predecessor with the same id and aborts its open
    transaction. Then the consumer subscribes with the stage's rebalance listener and the stage's loop
    runs, one :meth:`ConsumerStage.step` per turn, until the ``stop`` event is set. On that graceful stop
    :meth:`ConsumerStage.finish` runs (a lake sink lands what it has buffered; a transactional
    stage has nothing left: its batch in flight has committed, a batch prepared ahead is dropped), then
    :meth:`ConsumerStage.close`, then the consumer stops (leaving the group) and the producer stops.
    Clients are stopped whatever ended the loop.

Assignment
    ``lab_assigned_partitions{group,topic}`` is set to the partitions this member now owns and the line
    "partitions assigned" is logged: this is the readiness signal (tests and operators wait for the gauge,
    not the log; it drops back on revocation and when the loop ends). Then, holding the stage lock, the assigned
    partitions are recovered, together (:meth:`ConsumerStage.recover_partitions`: one read of a changelog's
    partitions, not one per partition), and only after that marked *ready* (a lake sink marks each one as
    soon as it is sought, :meth:`ConsumerStage.mark_ready`, since it drops what it fetched of one not ready); no record of a partition
    that is not ready is processed or committed. A lake sink recovers by reading, for each of the
    partition's tables, the transaction version it holds, and seeking after the lowest (a table without
    one counts as the committed offset); a transactional stage rebuilds the partition's
    state from its changelog and reads on from the consumer's own position (the committed offset: seeking
    there from the callback re-delivered records after a ``kill -9``).

Revocation
    Holding the same lock (so after the commit in flight, never in the middle of one), the stage counts a
    new *generation*, marks the partitions not ready and releases them
    (:meth:`ConsumerStage.release_partitions`): a lake sink lets their running flushes land and drops their
    unlanded buffers; a transactional stage drops their state. Anything fetched but not committed is read
    again by the partitions' next owner (from the tables' versions for a lake sink, from the committed
    offsets for a transactional stage), which is why a transactional stage drops, instead of committing, a
    batch fetched in an earlier generation.

Fatal errors
    aiokafka only logs an exception raised in a rebalance callback, so the runtime stores it instead and
    the loop raises it at its next turn: a partition that could not be recovered must never be processed.
    Any exception leaving the loop stops the stage's clients and propagates; the service exits non-zero and
    its supervisor starts it again, which recovers as after a crash.

Crash (``kill -9``) at any moment
    A lake sink's progress is its tables' transaction versions: a Delta commit and its version land
    together or not at all (a crashed commit leaves at most unreferenced files no reader sees), so its
    next owner resumes after them, and a crash between the Delta commit and the Kafka offset commit costs
    only a re-read of records the tables then skip. A transactional stage's progress is its committed
    offsets: its open transaction is aborted by the broker when its transactional id registers again (or
    after its 20 s timeout), so ``read_committed`` readers never see its records.

Who retries what
    Lake calls of a lake sink (reading a table's version, a Delta commit) are retried without limit, with
    exponential backoff (:func:`archlab.core.retry.backoff`), by the flush or the recovery that made them:
    a retried commit first reads the table's transaction version and lands only what it lacks, and a
    commit that conflicts with another writer's is retried on the new table version
    (:class:`archlab.lake.tables.Tables`). Kafka sends and fetches are retried by the clients (the producer
    is idempotent). Nobody retries a Kafka offset commit: a lake sink's refused one is a lost lag report;
    a failed transaction ends the stage, and its restart fences and aborts it.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import make_consumer, make_producer

log = structlog.get_logger(__name__)

ASSIGNED_PARTITIONS_METRIC = "lab_assigned_partitions"  # the readiness signal (see archlab.streaming.readiness)
ASSIGNED_PARTITIONS = Gauge(
    ASSIGNED_PARTITIONS_METRIC, "Partitions a consumer stage owns (set when they are assigned)", ["group", "topic"]
)
GROUP_JOINS_METRIC = "lab_group_joins"  # exported as lab_group_joins_total
GROUP_JOINS = MetricCounter(
    GROUP_JOINS_METRIC,
    "Assignments a consumer stage received: one per join of its group, so more than one in a member's life "
    "means a rebalance (another member, or this one evicted and rejoining, e.g. for missed heartbeats)",
    ["group"],
)

TRANSACTION_TIMEOUT_MS = 20_000  # how long a crashed stage's open transaction can hold up read_committed readers


class _Listener(ConsumerRebalanceListener):
    def __init__(self, stage: ConsumerStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._stage._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self._stage._assigned(assigned)


class ConsumerStage(ABC):
    """One member of a consumer group: the rebalance listener, ready partitions, the fatal error and
    the loop. Subclasses say what one turn of the loop does and how a partition is recovered and released."""

    def __init__(self, consumer: AIOKafkaConsumer, *, group_id: str) -> None:
        self.consumer = consumer
        self.group_id = group_id
        self.listener: ConsumerRebalanceListener = _Listener(self)
        self.generation = 0  # rebalances begun so far: what was fetched in an earlier one is stale
        self._rebalanced = asyncio.Condition()  # its lock: a rebalance and a commit never overlap
        self._ready: set[TopicPartition] = set()  # assigned and recovered
        self._owned: set[TopicPartition] = set()  # assigned (the readiness gauge)
        self._gauge_topics: set[str] = set()
        self._fatal: BaseException | None = None

    # --- the loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Turn the loop until ``stop``, then finish gracefully; raise the first fatal error."""
        try:
            while not stop.is_set():
                self.raise_if_fatal()
                await self.step()
            await self.finish()
        finally:
            await self.close()
            self._owned.clear()
            self._publish_ownership()

    @abstractmethod
    async def step(self) -> None:
        """One turn: fetch, and process or commit what is due."""

    async def finish(self) -> None:
        """After ``stop``: complete what may still be committed."""

    async def close(self) -> None:
        """Always, last: drop what may not be committed."""

    def raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def is_ready(self, tp: TopicPartition) -> bool:
        return tp in self._ready

    def mark_ready(self, tp: TopicPartition) -> None:
        """One partition of the assignment being recovered is safe to process already: a stage that drops
        the fetched records of partitions not ready (the lake sink) marks each as soon as it has sought
        it, so that nothing fetched after that seek is dropped while the others recover."""
        self._ready.add(tp)

    @asynccontextmanager
    async def holding(self, partitions: Collection[TopicPartition], generation: int) -> AsyncIterator[bool]:
        """Keep rebalances out while the body runs, once every one of ``partitions`` is ready. Yields
        False, and the body must commit nothing, when a rebalance began after ``generation``."""
        async with self._rebalanced:
            await self._rebalanced.wait_for(
                lambda: self._fatal is not None or self.generation != generation or self._ready.issuperset(partitions)
            )
            self.raise_if_fatal()
            yield self.generation == generation

    # --- rebalance hooks ---------------------------------------------------------------------
    async def recover_partitions(self, assigned: Collection[TopicPartition]) -> None:
        """Make the partitions of one assignment safe to process (runs before any of their records is)."""

    async def release_partitions(self, revoked: Collection[TopicPartition]) -> None:
        """Give revoked partitions up (runs after the commit in flight)."""

    def after_assignment(self) -> None:
        """After every assignment, recovered or not (e.g. to update gauges)."""

    # --- the listener's side -----------------------------------------------------------------
    async def _assigned(self, assigned: Collection[TopicPartition]) -> None:
        GROUP_JOINS.labels(self.group_id).inc()
        self._owned.update(assigned)
        self._publish_ownership()
        log.info("partitions assigned", group=self.group_id,
                 partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        async with self._rebalanced:
            try:
                await self.recover_partitions(assigned)
                self._ready.update(assigned)
            except Exception as exc:  # without its recovery a partition must not run
                self._fatal = exc
            self.after_assignment()
            self._rebalanced.notify_all()

    async def _revoked(self, revoked: Collection[TopicPartition]) -> None:
        async with self._rebalanced:
            self.generation += 1
            self._ready.difference_update(revoked)
            try:
                await self.release_partitions(revoked)
            except Exception as exc:
                self._fatal = exc
            self._rebalanced.notify_all()
        self._owned.difference_update(revoked)
        self._publish_ownership()

    def _publish_ownership(self) -> None:
        owned = Counter(tp.topic for tp in self._owned)
        self._gauge_topics.update(owned)
        for topic in self._gauge_topics:
            ASSIGNED_PARTITIONS.labels(self.group_id, topic).set(owned[topic])


def _fetch_min_bytes(settings: Settings, topics: Collection[str]) -> int:
    """What a stage's fetch waits for, up to the batch deadline. Raw topics are written a record at a time
    by any producer: their readers batch by size. Every other topic is written by a stage, a transaction
    (a batch) at a time, so its readers take each transaction as it commits. A minimum there cost speed:
    aiokafka keeps one fetch in flight per broker and leaves out the partitions whose records are still
    buffered, so with the data in one partition (gold's current time bucket) the next fetch asked only the
    quiet ones and waited out the deadline (`bench gold`: 32,487 events/s with 0.5 s, 20,371 with 1 s)."""
    return settings.batch_min_bytes if any(names.kind_of(topic) is names.TopicKind.RAW for topic in topics) else 1


async def run_stage(
    settings: Settings,
    make: Callable[[AIOKafkaConsumer, AIOKafkaProducer | None], ConsumerStage],
    topics: list[str],
    group: str,
    stop: asyncio.Event,
    *,
    transactional: bool = False,
    **consumer_options: Any,
) -> None:
    """Run the stage ``make`` builds over ``topics`` in consumer group ``group`` until ``stop``.

    ``make`` gets the consumer and, for a ``transactional`` stage, a started producer whose transactional
    id is ``<group>-<instance id>`` (else None). ``consumer_options`` override the consumer's defaults."""
    async with AsyncExitStack() as clients:
        producer = None
        if transactional:
            producer = make_producer(settings, transactional_id=names.group(group, settings.instance_id),
                                     transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
            await producer.start()  # fences a dead predecessor with the same id, aborting its open transaction
            clients.push_async_callback(producer.stop)
        consumer = make_consumer(settings, group_id=group, fetch_min_bytes=_fetch_min_bytes(settings, topics),
                                 fetch_max_wait_ms=settings.batch_wait_ms, **consumer_options)
        stage = make(consumer, producer)
        consumer.subscribe(topics, listener=stage.listener)
        await consumer.start()
        clients.push_async_callback(consumer.stop)
        try:
            await stage.run(stop)
        except Exception as exc:
            log.error("consumer stage failed", group=group, error=repr(exc))
            raise
