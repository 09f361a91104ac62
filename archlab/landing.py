"""The landing mechanism: Kafka records to Parquet objects on the lake, exactly once.

Every layer (bronze, silver, quarantine, gold) lands through :class:`LakeSink`. The guarantee is
the Kafka Connect S3 sink's, made to hold also when one flush spans several hour folders:

* A *flush* takes the buffered records of one partition, offsets ``[start, end]``, and writes one
  object per Hive folder, each named ``part-<partition>-<start>.parquet``: the name is a pure
  function of the data, so a retry of the same flush overwrites instead of adding.
* Before the objects, the flush writes an *intent* (``_landing/<group>/<topic>/<partition>.json``)
  listing their keys. Offsets are committed only after every object is durable.
* When a partition is assigned, an intent whose ``start`` is not below the committed offset
  belongs to a flush that never committed: its objects are deleted and the records re-read
  from the committed offset, so no record can sit in two objects, whatever the new batching.
* Between two commits of a partition there is at most one flush in flight, so one intent per
  partition is enough.

Flushes happen when a partition's buffer reaches ``flush_records`` or ``flush_bytes``, or its
first record is older than ``flush_interval_s`` (so an idle stream still lands). While the lake is
unreachable the flush is retried with backoff and nothing more is fetched, so memory stays
bounded; the records are committed once the lake is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, wait_exponential

from archlab.lake import Lake, partition_folder

log = structlog.get_logger(__name__)

LANDED_RECORDS = Counter("lab_landed_records_total", "Records landed on the lake", ["layer", "dataset"])
LANDED_OBJECTS = Counter("lab_landed_objects_total", "Parquet objects written", ["layer", "dataset"])
LANDED_BYTES = Counter("lab_landed_bytes_total", "Parquet bytes written", ["layer", "dataset"])
FLUSH_SECONDS = Histogram("lab_flush_seconds", "Duration of one flush cycle (write + commit)", ["layer"])
LAKE_RETRIES = Counter("lab_lake_write_retries_total", "Lake writes retried after an error", ["layer"])
BUFFERED_RECORDS = Gauge("lab_buffered_records", "Records buffered and not yet landed", ["layer"])
REWRITTEN_FLUSHES = Counter(
    "lab_uncommitted_flushes_undone_total", "Flushes found written but not committed, undone on assignment", ["layer"]
)


class BatchEncoder(Protocol):
    """Turns one partition's records into the rows landed for them, with an explicit schema."""

    layer: str
    schema: pa.Schema
    time_column: str  # a non-null timestamp column that picks the dt=/hour= folder
    subdir_column: str | None  # optional string column adding a folder level (e.g. gold aggregate)

    def dataset_of(self, topic: str) -> str: ...

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table: ...


@dataclass(frozen=True, slots=True)
class RollPolicy:
    records: int
    bytes: int
    interval_s: float


@dataclass(slots=True)
class _Buffer:
    records: list[ConsumerRecord] = field(default_factory=list)
    size: int = 0
    started: float = 0.0

    def add(self, batch: list[ConsumerRecord]) -> None:
        if not self.records:
            self.started = time.monotonic()
        self.records.extend(batch)
        self.size += sum(len(r.value or b"") + len(r.key or b"") for r in batch)

    def due(self, policy: RollPolicy, now: float) -> bool:
        return bool(self.records) and (
            len(self.records) >= policy.records
            or self.size >= policy.bytes
            or now - self.started >= policy.interval_s
        )


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: LakeSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._sink.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._sink.recover(assigned)


class LakeSink:
    """Consumes topics and lands their records on the lake, committing only what is durable."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        lake: Lake,
        encoder: BatchEncoder,
        *,
        group_id: str,
        policy: RollPolicy,
        fetch_max_records: int = 10_000,
    ) -> None:
        self._consumer = consumer
        self._lake = lake
        self._encoder = encoder
        self._group_id = group_id
        self._policy = policy
        self._fetch_max_records = fetch_max_records
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._lock = asyncio.Lock()  # one flush-and-commit at a time, never during a rebalance
        self._buffered = BUFFERED_RECORDS.labels(encoder.layer)
        self.listener = _Rebalance(self)

    # --- main loop ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume, buffer and land until ``stop`` is set; then land what is buffered."""
        while not stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self._fetch_max_records)
            assigned = self._consumer.assignment()
            for tp, records in fetched.items():
                if tp in assigned and records:
                    self._buffers.setdefault(tp, _Buffer()).add(records)
            now = time.monotonic()
            due = [tp for tp, buffer in self._buffers.items() if buffer.due(self._policy, now)]
            if due:
                await self.flush(due)
            self._buffered.set(sum(len(b.records) for b in self._buffers.values()))
        await self.flush(list(self._buffers))

    async def flush(self, partitions: list[TopicPartition]) -> None:
        """Land the buffers of these partitions, then commit their offsets."""
        async with self._lock:
            batches = {tp: self._buffers.pop(tp).records for tp in partitions if tp in self._buffers}
            batches = {tp: records for tp, records in batches.items() if records}
            if not batches:
                return
            started = time.perf_counter()
            await asyncio.gather(*(self._land(tp, records) for tp, records in batches.items()))
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on while we wrote: whoever owns these partitions now finds our
                # intents uncommitted and undoes them. Re-read everything we still own.
                log.warning("commit refused, re-reading from committed offsets", error=str(exc))
                self._buffers.clear()
                await self._recover_unlocked(list(self._consumer.assignment()), seek=True)
                return
            FLUSH_SECONDS.labels(self._encoder.layer).observe(time.perf_counter() - started)

    # --- rebalance hooks ---------------------------------------------------------------------
    async def release(self, revoked: list[TopicPartition]) -> None:
        """On revocation: wait for an in-flight flush, then drop the unlanded rest (not committed)."""
        async with self._lock:
            for tp in revoked:
                self._buffers.pop(tp, None)

    async def recover(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        async with self._lock:
            await self._recover_unlocked(assigned, seek=False)

    async def _recover_unlocked(self, partitions: list[TopicPartition], *, seek: bool) -> None:
        for tp in partitions:
            committed = await self._consumer.committed(tp)
            intent = await asyncio.to_thread(self._lake.read_json, self._intent_key(tp))
            if isinstance(intent, dict) and (committed is None or intent["start"] >= committed):
                log.info("undoing uncommitted flush", topic=tp.topic, partition=tp.partition, start=intent["start"])
                await asyncio.to_thread(self._lake.delete, list(intent["objects"]))
                REWRITTEN_FLUSHES.labels(self._encoder.layer).inc()
            if seek:
                if committed is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)

    # --- writing -----------------------------------------------------------------------------
    def _intent_key(self, tp: TopicPartition) -> str:
        return f"_landing/{self._group_id}/{tp.topic}/{tp.partition:03d}.json"

    async def _land(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        encoder = self._encoder
        dataset = encoder.dataset_of(tp.topic)
        start = records[0].offset
        table = encoder.encode(records)
        parts = list(_split_by_folder(table, encoder, dataset, f"part-{tp.partition:03d}-{start:020d}.parquet"))
        intent = {"start": start, "end": records[-1].offset, "objects": [key for key, _ in parts]}
        await self._retrying(self._lake.write_json, self._intent_key(tp), intent)
        sizes = await asyncio.gather(*(self._retrying(self._lake.write_parquet, key, part) for key, part in parts))
        LANDED_RECORDS.labels(encoder.layer, dataset).inc(table.num_rows)
        LANDED_OBJECTS.labels(encoder.layer, dataset).inc(len(parts))
        LANDED_BYTES.labels(encoder.layer, dataset).inc(sum(sizes))

    async def _retrying(self, write, *args):  # type: ignore[no-untyped-def]
        """Run a blocking lake write in a thread, retrying without limit while the lake is down."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.2, max=5),
            before_sleep=self._count_retry,
            reraise=True,
        ):
            with attempt:
                return await asyncio.to_thread(write, *args)

    def _count_retry(self, state) -> None:  # type: ignore[no-untyped-def]
        LAKE_RETRIES.labels(self._encoder.layer).inc()
        log.warning("lake write failed, retrying", attempt=state.attempt_number, error=repr(state.outcome.exception()))


def _split_by_folder(table: pa.Table, encoder: BatchEncoder, dataset: str, name: str):  # type: ignore[no-untyped-def]
    """Yield ``(key, rows)`` per Hive folder (subdir, dt, hour) of a batch, in a stable order."""
    hours = pc.floor_temporal(table[encoder.time_column], unit="hour")
    groups = [hours] if encoder.subdir_column is None else [table[encoder.subdir_column], hours]
    keyed = pa.table({f"k{i}": column for i, column in enumerate(groups)}).append_column(
        "row", pa.array(range(table.num_rows), pa.int64())
    )
    grouped = keyed.group_by([f"k{i}" for i in range(len(groups))], use_threads=False).aggregate([("row", "list")])
    for group in sorted(grouped.to_pylist(), key=lambda g: tuple(str(g[f"k{i}"]) for i in range(len(groups)))):
        hour: datetime = group[f"k{len(groups) - 1}"]
        subdir = group["k0"] if encoder.subdir_column is not None else None
        folder = partition_folder(encoder.layer, dataset, hour.astimezone(UTC), subdir)
        yield f"{folder}/{name}", table.take(pa.array(group["row_list"], pa.int64()))
