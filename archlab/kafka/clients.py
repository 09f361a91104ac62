"""Kafka I/O shared by every service: client factories and a batching keyed sender.

Every topic carries one record per event, keyed; speed comes from building Kafka record
batches per partition (one future per batch) instead of one ``send`` future per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from archlab.core.retry import backoff
from archlab.core.settings import Settings

Headers = Sequence[tuple[str, bytes]]


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) so retries never write a record twice."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 20,
        "max_batch_size": 512 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and reads only committed transactional data."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_poll_interval_ms": 600_000,
        "session_timeout_ms": 10_000,  # a killed member is replaced within seconds
        "heartbeat_interval_ms": 3_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for a key (murmur2)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = np.uint32(0x5BD1E995)


def partitions_for(keys: Sequence[bytes], partitions: int) -> list[int]:
    """:func:`partition_for` of many keys at once: murmur2 column-wise with numpy, keys grouped by length
    (aiokafka's murmur2 is pure Python: hashing each gold record's key was a sixth of gold's work at high
    cardinality)."""
    hashes = np.zeros(len(keys), np.uint32)
    by_length: dict[int, list[int]] = {}
    for row, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(row)
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as murmur2's does
        for length, rows in by_length.items():
            data = np.frombuffer(b"".join(keys[row] for row in rows), np.uint8).reshape(len(rows), length)
            h = np.full(len(rows), 0x9747B28C ^ length, np.uint32)
            whole = length // 4 * 4
            if whole:
                blocks = data[:, :whole].copy().view("<u4")  # little-endian 4-byte words, as murmur2 reads them
                for column in range(blocks.shape[1]):
                    k = blocks[:, column] * _M
                    k ^= k >> np.uint32(24)
                    h = (h * _M) ^ (k * _M)
            tail = data[:, whole:].astype(np.uint32)
            for position in range(length - whole - 1, -1, -1):  # the last bytes, highest first
                h ^= tail[:, position] << np.uint32(8 * position)
            if length > whole:
                h *= _M
            h ^= h >> np.uint32(13)
            h *= _M
            h ^= h >> np.uint32(15)
            hashes[rows] = h
    return ((hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()


class KeyedBatchSender:
    """Sends keyed records to one topic through per-partition record batches.

    Records with the same key go to the same partition in call order, like ``producer.send``;
    each full batch is handed to the producer at once and ``flush`` waits until every batch
    is acknowledged, raising the first delivery error.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._open: dict[int, Any] = {}
        self._full: list[tuple[int, Any]] = []
        self._pending: list[tuple[asyncio.Future[Any], int, int]] = []
        self.last_offsets: dict[int, int] = {}  # partition -> offset of the last record acknowledged
        self._next_unkeyed = 0

    @classmethod
    async def for_topic(cls, producer: AIOKafkaProducer, topic: str) -> KeyedBatchSender:
        partitions = await producer.partitions_for(topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist: create it first (lab infra init)")
        return cls(producer, topic, len(partitions))

    @property
    def partitions(self) -> int:
        return self._partitions

    def _partition_of(self, key: bytes | None) -> int:
        return self._round_robin() if key is None else partition_for(key, self._partitions)

    def _partitions_of(self, keys: Sequence[bytes | None]) -> list[int]:
        """:meth:`_partition_of` of many keys, the keyed ones hashed at once."""
        keyed = [key for key in keys if key is not None]
        hashed = partitions_for(keyed, self._partitions)
        if len(keyed) == len(keys):  # the usual case: no per-record pass to interleave round-robin rows
            return hashed
        rest = iter(hashed)
        return [self._round_robin() if key is None else next(rest) for key in keys]

    def _round_robin(self) -> int:
        partition = self._next_unkeyed
        self._next_unkeyed = (self._next_unkeyed + 1) % self._partitions
        return partition

    def _append(self, key: bytes | None, value: bytes | None, headers: Headers, partition: int) -> None:
        """Add a record to its partition's open batch; a full batch waits in ``_full`` to be shipped."""
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
            self._full.append((partition, self._open.pop(partition)))
            batch = self._open[partition] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                raise ValueError(f"record of {len(value or b'')} bytes does not fit in an empty batch")

    async def send(
        self, key: bytes | None, value: bytes | None, headers: Headers = (), partition: int | None = None
    ) -> None:
        """Queue one record: to ``partition`` if given, else where the key hashes (round robin if none)."""
        self._append(key, value, headers, self._partition_of(key) if partition is None else partition)
        await self._ship_full()

    async def send_many(
        self,
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Queue many header-less records in one synchronous pass (the hot path), then ship full batches."""
        if partitions is None:
            partitions = self._partitions_of(keys)
        for key, value, partition in zip(keys, values, partitions, strict=True):
            self._append(key, value, (), partition)
        await self._ship_full()

    async def _ship_full(self) -> None:
        full, self._full = self._full, []
        for partition, batch in full:
            await self._ship_batch(partition, batch)

    async def _ship_batch(self, partition: int, batch: Any) -> None:
        count = batch.record_count()
        batch.close()
        self._pending.append((await self._producer.send_batch(batch, self._topic, partition=partition), count, partition))

    async def ship(self) -> None:
        """Hand every open batch to the producer now, without waiting for acknowledgements."""
        await self._ship_full()
        for partition in list(self._open):
            await self._ship_batch(partition, self._open.pop(partition))

    async def flush(self) -> tuple[int, list[BaseException]]:
        """Ship every open batch, wait for the broker, and return (records delivered, errors)."""
        await self.ship()
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*(future for future, _, _ in pending), return_exceptions=True)
        delivered = 0
        for (_, count, partition), result in zip(pending, results, strict=True):
            if not isinstance(result, BaseException):
                delivered += count
                last = result.offset + count - 1
                self.last_offsets[partition] = max(last, self.last_offsets.get(partition, -1))
        return delivered, [result for result in results if isinstance(result, BaseException)]


async def wait_for_kafka(settings: Settings, stop: asyncio.Event, timeout_s: float = 300.0) -> bool:
    """Wait until the broker answers a metadata request (a service started while Kafka restarts
    waits for it instead of crashing); False when ``stop`` was set first. Raises after ``timeout_s``."""
    try:
        async for attempt in backoff("Kafka metadata request", stop=stop, retry_on=KafkaConnectionError,
                                     give_up_after_s=timeout_s, bootstrap=settings.kafka_bootstrap):
            with attempt:
                if stop.is_set():
                    return False
                client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
                try:
                    await client.bootstrap()
                finally:
                    await client.close()
    except KafkaConnectionError:
        if stop.is_set():
            return False
        raise
    return True


async def end_offsets(settings: Settings, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, committed or not (the high watermark;
    a read_committed consumer would answer the last stable offset instead)."""
    consumer = make_consumer(settings, group_id=None, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        return await consumer.end_offsets(list(partitions))
    finally:
        await consumer.stop()


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of a topic, asked of the broker (a fresh consumer has no metadata yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if description.get("error_code") or not description.get("partitions"):
        raise LookupError(f"topic {topic!r} does not exist")
    return sorted(TopicPartition(topic, p["partition"]) for p in description["partitions"])


async def read_to_end(
    settings: Settings, partitions: Sequence[TopicPartition], max_records: int = 20_000,
    start: dict[TopicPartition, int] | None = None,
) -> AsyncIterator[list[ConsumerRecord]]:
    """Every committed record of these partitions, from the beginning (or ``start``) to their end
    offset now.

    The end is the high watermark, not the last stable offset: a transaction already committed
    whose marker has not yet reached a partition (the coordinator writes markers after it answers
    the commit) is waited for and read, so a reader that saw a stage's consumer offsets move never
    misses that stage's output; a transaction still open is waited for until it commits or aborts
    (at most the stages' transaction timeout). Positions, not record counts, say when the end is
    reached: transaction markers and aborted records take offsets too.
    """
    ends = await end_offsets(settings, partitions)
    consumer = make_consumer(settings, group_id=None, isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(list(partitions))
        await consumer.seek_to_beginning(*partitions)
        for tp, offset in (start or {}).items():
            consumer.seek(tp, offset)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=max_records)).values():
                yield records
    finally:
        await consumer.stop()


async def read_all(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every committed record of a topic (read_committed) as it ends now, headers included."""
    out: list[ConsumerRecord] = []
    async for records in read_to_end(settings, await topic_partitions(settings, topic)):
        out.extend(records)
    return out
