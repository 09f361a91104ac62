"""The lake sink: Kafka records to Parquet objects on the lake, exactly once.

Every layer (bronze, silver, quarantine, dq, gold) lands through :class:`LakeSink`, a stage of the
consumer runtime (:mod:`archlab.streaming.runtime`, which says when partitions are recovered and
released and who retries what). The guarantee is the Kafka Connect S3 sink's, made to hold also when
one flush spans several hour folders:

* A *flush* takes the buffered records of one partition, offsets ``[start, end]``, and writes one
  object per Hive folder, each named by the partition and ``start`` (:func:`names.flush_object_path`):
  the name is a pure function of the data, so a retry of the same flush overwrites instead of adding.
* Before the objects, the flush writes an *intent* (:func:`names.landing_intent_path`) listing their
  keys. The partition's offset ``end + 1`` is committed to the group only after every object is durable.
* When a partition is assigned, an intent whose ``start`` is not below the committed offset
  belongs to a flush that never committed: its objects are deleted and the records re-read
  from the committed offset, so no record can sit in two objects, whatever the new batching.
* Between two commits of a partition there is at most one flush in flight, so one intent per
  partition is enough.

Flushes happen when a partition's buffer reaches ``flush_records`` or ``flush_bytes``, or its
first record is older than ``flush_interval_s`` (so an idle stream still lands), and on a graceful
stop. While the lake is unreachable the flush is retried with backoff and, once the partition's next
buffer is full, the partition is paused: memory stays bounded and the records are committed once the
lake is back. On revocation a partition's running flush still lands and commits; its buffer is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from archlab.core import names
from archlab.core.retry import backoff
from archlab.core.settings import Settings
from archlab.lake.store import Lake, clamp_to_calendar
from archlab.streaming.runtime import ConsumerStage, run_stage

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024

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
    """Turns one partition's records into the rows landed for them (with an explicit schema)."""

    layer: str
    subdir_column: str | None  # optional string column adding a folder level (e.g. gold aggregate)

    def time_column(self, dataset: str) -> str:
        """A non-null timestamp column of the dataset's rows that picks the dt=/hour= folder."""
        ...

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
        self.size += sum([len(r.value) for r in batch if r.value is not None])

    def full(self, policy: RollPolicy) -> bool:
        return len(self.records) >= policy.records or self.size >= policy.bytes

    def due(self, policy: RollPolicy, now: float) -> bool:
        return bool(self.records) and (
            len(self.records) >= policy.records
            or self.size >= policy.bytes
            or now - self.started >= policy.interval_s
        )


class LakeSink(ConsumerStage):
    """Consumes topics and lands their records on the lake, committing only what is durable.

    Flushes run in the background while consumption goes on, at most one per partition at a
    time (so one intent per partition is enough). A partition whose next buffer is full while
    its flush is still running (a slow or unreachable lake) is paused until that flush is done.
    """

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
        super().__init__(consumer, group_id=group_id)
        self._lake = lake
        self._encoder = encoder
        self._policy = policy
        self._fetch_max_records = fetch_max_records
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._inflight: dict[TopicPartition, asyncio.Task[None]] = {}
        self._paused: set[TopicPartition] = set()
        # Commits of concurrent flushes, one at a time. Not the runtime's rebalance lock: a revocation
        # holds that one while it waits for the revoked partitions' flushes to commit.
        self._commit_lock = asyncio.Lock()
        self._buffered = BUFFERED_RECORDS.labels(encoder.layer)

    # --- the loop ----------------------------------------------------------------------------
    async def step(self) -> None:
        """Buffer what was fetched for ready partitions; start the flushes that are due."""
        fetched = await self.consumer.getmany(timeout_ms=100, max_records=self._fetch_max_records)
        assigned = self.consumer.assignment()
        for tp, records in fetched.items():
            if records and tp in assigned and self.is_ready(tp):
                self._buffers.setdefault(tp, _Buffer()).add(records)
        self._reap()
        now = time.monotonic()
        for tp, buffer in list(self._buffers.items()):
            if not buffer.due(self._policy, now):
                continue
            if tp not in self._inflight:
                self._start_flush(tp)
            elif tp not in self._paused and buffer.full(self._policy):
                self.consumer.pause(tp)
                self._paused.add(tp)
        self._buffered.set(sum(len(b.records) for b in self._buffers.values()))

    async def finish(self) -> None:
        """Land what is buffered (after the flushes already running)."""
        await self._drain(list(self._inflight))
        for tp in list(self._buffers):
            self._start_flush(tp)
        await self._drain(list(self._inflight))

    def _start_flush(self, tp: TopicPartition) -> None:
        records = self._buffers.pop(tp).records
        self._inflight[tp] = asyncio.create_task(self._flush(tp, records), name=f"flush {tp.topic}/{tp.partition}")

    def _reap(self) -> None:
        """Forget finished flushes (re-raising a failure) and resume partitions paused for them."""
        for tp, task in list(self._inflight.items()):
            if task.done():
                del self._inflight[tp]
                task.result()
        for tp in [tp for tp in self._paused if tp not in self._inflight]:
            self._paused.discard(tp)
            if tp in self.consumer.assignment():
                self.consumer.resume(tp)

    async def _drain(self, partitions: Collection[TopicPartition]) -> None:
        tasks = [self._inflight[tp] for tp in partitions if tp in self._inflight]
        if tasks:
            await asyncio.gather(*tasks)
        self._reap()

    async def _flush(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Land one partition's buffer, then commit its offsets."""
        started = time.perf_counter()
        await self._land(tp, records)
        async with self._commit_lock:
            try:
                await self.consumer.commit({tp: records[-1].offset + 1})
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on while we wrote: the partition's next owner (maybe us again)
                # finds this intent uncommitted, undoes it and re-reads from the committed offset.
                log.warning("commit refused, the flush will be redone", topic=tp.topic, partition=tp.partition,
                            error=str(exc))
                return
        FLUSH_SECONDS.labels(self._encoder.layer).observe(time.perf_counter() - started)

    # --- rebalance hooks ---------------------------------------------------------------------
    async def release_partitions(self, revoked: Collection[TopicPartition]) -> None:
        """Let the revoked partitions' running flushes land and commit; drop their unlanded rest."""
        for tp in revoked:
            self._buffers.pop(tp, None)
        await self._drain(revoked)

    async def recover_partition(self, tp: TopicPartition) -> None:
        """Undo a flush of the partition that was written but never committed, then read it from the
        committed offset (records fetched meanwhile are not buffered).

        The lake may be down right now: reading the intent is retried until it answers, since a
        partition that skipped its recovery must never be landed."""
        committed = await self.consumer.committed(tp)
        intent = await self._retrying(self._lake.read_json, self._intent_key(tp))
        if isinstance(intent, dict) and (committed is None or intent["start"] >= committed):
            log.info("undoing uncommitted flush", topic=tp.topic, partition=tp.partition, start=intent["start"])
            await self._retrying(self._lake.delete, list(intent["objects"]))
            REWRITTEN_FLUSHES.labels(self._encoder.layer).inc()
        if committed is None:
            await self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, committed)
        self._buffers.pop(tp, None)

    # --- writing -----------------------------------------------------------------------------
    def _intent_key(self, tp: TopicPartition) -> str:
        return names.landing_intent_path(self.group_id, tp.topic, tp.partition)

    async def _land(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        encoder = self._encoder
        dataset = names.dataset_of(tp.topic)
        start = records[0].offset
        table = encoder.encode(records)
        parts = list(_split_by_folder(table, encoder, dataset, tp.partition, start))
        intent = {"start": start, "end": records[-1].offset, "objects": [key for key, _ in parts]}
        await self._retrying(self._lake.write_json, self._intent_key(tp), intent)
        sizes = await asyncio.gather(*(self._retrying(self._lake.write_parquet, key, part) for key, part in parts))
        LANDED_RECORDS.labels(encoder.layer, dataset).inc(table.num_rows)
        LANDED_OBJECTS.labels(encoder.layer, dataset).inc(len(parts))
        LANDED_BYTES.labels(encoder.layer, dataset).inc(sum(sizes))

    async def _retrying(self, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking lake call in a thread, retrying without limit while the lake is down."""
        async for attempt in backoff("lake write", first_s=0.2, max_s=5, layer=self._encoder.layer):
            with attempt:
                return await asyncio.to_thread(call, *args)
            LAKE_RETRIES.labels(self._encoder.layer).inc()  # the attempt failed: it will be retried
        raise AssertionError("unreachable: a backoff without stop event or deadline never gives up")


def _split_by_folder(
    table: pa.Table, encoder: BatchEncoder, dataset: str, partition: int, start: int
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(key, rows)`` per Hive folder (subdir, dt, hour) of one flush, in a stable order.

    A row whose time lies outside years 1-9999 (a producer's odd Kafka timestamp) is filed in the
    first or last hour folder; the row itself keeps its value.
    """
    stamps = table[encoder.time_column(dataset)]
    hours = pc.floor_temporal(clamp_to_calendar(stamps)[0], unit="hour")
    groups = [hours] if encoder.subdir_column is None else [table[encoder.subdir_column], hours]
    keyed = pa.table({f"k{i}": column for i, column in enumerate(groups)}).append_column(
        "row", pa.array(range(table.num_rows), pa.int64())
    )
    grouped = keyed.group_by([f"k{i}" for i in range(len(groups))], use_threads=False).aggregate([("row", "list")])
    for group in sorted(grouped.to_pylist(), key=lambda g: tuple(str(g[f"k{i}"]) for i in range(len(groups)))):
        hour: datetime = group[f"k{len(groups) - 1}"]
        subdir = group["k0"] if encoder.subdir_column is not None else None
        folder = names.partition_folder(encoder.layer, dataset, hour.astimezone(UTC), subdir)
        yield names.flush_object_path(folder, partition, start), table.take(pa.array(group["row_list"], pa.int64()))


async def land(
    settings: Settings, encoder: BatchEncoder, topics: list[str], group: str, stop: asyncio.Event
) -> None:
    """Run a LakeSink for ``topics`` in consumer group ``group`` until ``stop``: every service's
    lake landing (bronze, silver, quarantine, dq, gold)."""
    lake = Lake.from_settings(settings)
    policy = RollPolicy(settings.flush_records, settings.flush_bytes, settings.flush_interval_s)

    def sink(consumer: AIOKafkaConsumer, _: object) -> LakeSink:
        return LakeSink(consumer, lake, encoder, group_id=group, policy=policy)

    # Smaller fetches than the processing stages: a sink buffers whole files anyway, and its memory
    # is fetches plus buffers for every partition.
    await run_stage(settings, sink, topics, group, stop, max_partition_fetch_bytes=2 * MIB, fetch_max_bytes=16 * MIB)
