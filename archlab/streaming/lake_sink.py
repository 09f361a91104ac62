"""The lake sink: Kafka records to Delta tables on the lake, exactly once through the tables' own commits.

Every layer (bronze, silver, quarantine, dq, gold) lands through :class:`LakeSink`, a stage of the
consumer runtime (:mod:`archlab.streaming.runtime`, which says when partitions are recovered and
released and who retries what). Its encoder names the tables (:class:`TableTarget`) a dataset's records
land in and turns one partition's records into their rows. The guarantee is Spark Structured
Streaming's, through Delta application transactions (:mod:`archlab.lake.tables`):

* A *flush* takes the buffered records of a topic's partitions and makes one commit per table, carrying
  ``Landed(app_id, last offset flushed)`` per partition with ``app_id = names.app_id(group, topic,
  partition)``: the rows and the progress become visible together, or not at all. A flush due for one
  partition takes every partition of its topic that has records and no flush running, so a table gets
  one commit (one file, one log entry) per interval, not one per partition.
* When a partition is assigned, the sink reads each table's transaction version for its ``app_id``
  and resumes after the lowest (a table without one counts as the group's committed offset, or the
  beginning); a flush drops, per table, the records at or below the version that table already holds.
  So a restart, a rebalance or a retried commit never lands a record twice, whatever the new batching;
  merged tables are idempotent besides (a row is replaced only by a newer one).
* The Kafka offset commit after the Delta commits is a report for lag, not progress: a refused or lost
  one costs at most a re-read of records the tables then skip.
* At most one flush per partition is in flight, and the commits to one table are made one at a time
  in the process (one table handle per path); other instances' commits are resolved by delta-rs
  (appends) or retried on conflict (:class:`~archlab.lake.tables.Tables`).

Flushes happen when a partition's buffer reaches ``flush_records`` or ``flush_bytes``, or its first
record is older than ``flush_interval_s`` (so an idle stream still lands), and on a graceful stop.
While the lake is unreachable the commit is retried with backoff and, once the partition's next buffer
is full, the partition is paused: memory stays bounded. On revocation a partition's running flush still
lands; its buffer is dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol, TypeVar

import pyarrow as pa
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from prometheus_client import Counter, Gauge, Histogram

from archlab.core import names
from archlab.core.retry import backoff
from archlab.core.settings import Settings
from archlab.lake.tables import Landed, Tables, TableTarget
from archlab.streaming.runtime import ConsumerStage, run_stage

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024

#: What a lake call raises while the lake is unreachable or a commit keeps conflicting: retried without limit.
LAKE_ERRORS = (OSError, DeltaError)

LANDED_RECORDS = Counter("lab_landed_records_total", "Records landed on the lake", ["layer", "dataset"])
LAKE_COMMITS = Counter("lab_lake_commits_total", "Delta commits made by the lake sinks", ["layer", "dataset"])
FLUSH_SECONDS = Histogram("lab_flush_seconds", "Duration of one flush (every table's commit)", ["layer"])
COMMIT_SECONDS = Histogram("lab_lake_commit_seconds", "Duration of one Delta commit of a lake sink", ["layer"],
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LAKE_RETRIES = Counter("lab_lake_write_retries_total", "Lake calls retried after an error", ["layer"])
BUFFERED_RECORDS = Gauge("lab_buffered_records", "Records buffered and not yet landed", ["layer"])

_OFFSET = attrgetter("offset")


class BatchEncoder(Protocol):
    """Names the tables a dataset's records land in and turns one partition's records into their rows."""

    layer: str

    def targets(self, dataset: str) -> list[TableTarget]:
        """The dataset's tables, with explicit schemas (the same list for every call)."""
        ...

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        """Rows per target path of one partition's records (partition columns filled); a path left out
        has no rows."""
        ...


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


class _Flush:
    """One partition's records (in offset order) and their rows, encoded once per cut: normally every
    table needs the rows of all records; after a restart a table may already hold a prefix of them."""

    def __init__(self, records: list[ConsumerRecord], encoder: BatchEncoder) -> None:
        self.records = records
        self._encoder = encoder
        self._encoded: dict[int, dict[str, pa.Table]] = {}
        self._lock = threading.Lock()  # tables are committed from several threads

    @property
    def last(self) -> int:
        return self.records[-1].offset

    def rows(self, target: TableTarget, landed: int) -> pa.Table:
        """The target's rows of the records after offset ``landed`` (those the table lacks)."""
        cut = bisect_right(self.records, landed, key=_OFFSET)
        if cut == len(self.records):
            return target.schema.empty_table()
        with self._lock:
            if cut not in self._encoded:
                self._encoded[cut] = self._encoder.encode(self.records[cut:])
            rows = self._encoded[cut].get(target.path)
        return target.schema.empty_table() if rows is None else rows


class LakeSink(ConsumerStage):
    """Consumes topics and lands their records in Delta tables, each flush one commit per table.

    Flushes run in the background while consumption goes on, at most one per partition at a time.
    A partition whose next buffer is full while its flush is still running (a slow or unreachable
    lake) is paused until that flush is done.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        tables: Tables,
        encoder: BatchEncoder,
        *,
        group_id: str,
        policy: RollPolicy,
        fetch_max_records: int = 10_000,
    ) -> None:
        super().__init__(consumer, group_id=group_id)
        self._tables = tables
        self._encoder = encoder
        self._policy = policy
        self._fetch_max_records = fetch_max_records
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._inflight: dict[TopicPartition, asyncio.Task[None]] = {}
        self._paused: set[TopicPartition] = set()
        # Per assigned partition: target path -> the last offset that table holds (-1: none).
        self._landed: dict[TopicPartition, dict[str, int]] = {}
        self._handles: dict[str, DeltaTable] = {}
        # One call at a time per table handle: concurrent commits of one process to one table would
        # only conflict with each other, and a handle is not meant to be shared between threads.
        self._table_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Kafka commits of concurrent flushes, one at a time. Not the runtime's rebalance lock: a revocation
        # holds that one while it waits for the revoked partitions' flushes to land.
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
        for tp in [tp for tp, buffer in self._buffers.items() if buffer.due(self._policy, now)]:
            if tp not in self._buffers:
                continue  # taken by the flush of its topic just started
            if tp not in self._inflight:
                self._start_flush(tp.topic)
            elif tp not in self._paused and self._buffers[tp].full(self._policy):
                self.consumer.pause(tp)
                self._paused.add(tp)
        self._buffered.set(sum(len(b.records) for b in self._buffers.values()))

    async def finish(self) -> None:
        """Land what is buffered (after the flushes already running)."""
        await self._drain(list(self._inflight))
        for topic in {tp.topic for tp in self._buffers}:
            self._start_flush(topic)
        await self._drain(list(self._inflight))

    def _start_flush(self, topic: str) -> None:
        """Flush every partition of ``topic`` that has buffered records and no flush running, together."""
        group = {tp: self._buffers.pop(tp).records for tp in list(self._buffers)
                 if tp.topic == topic and tp not in self._inflight}
        task = asyncio.create_task(self._flush(group), name=f"flush {topic} {sorted(tp.partition for tp in group)}")
        for tp in group:
            self._inflight[tp] = task

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
        tasks = {self._inflight[tp] for tp in partitions if tp in self._inflight}
        if tasks:
            await asyncio.gather(*tasks)
        self._reap()

    async def _flush(self, group: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Land partitions' buffers (of one topic) in every table that lacks some of them, one commit per
        table, then report the offsets to Kafka."""
        started = time.perf_counter()
        dataset = names.dataset_of(next(iter(group)).topic)
        flushes = {tp: _Flush(records, self._encoder) for tp, records in group.items()}
        fresh = sum(len(records) - bisect_right(records, min(self._landed[tp].values()), key=_OFFSET)
                    for tp, records in group.items())
        landings = []
        for target in self._encoder.targets(dataset):
            behind = {tp: flush for tp, flush in flushes.items() if self._landed[tp][target.path] < flush.last}
            if behind:
                landings.append((target, behind))
        await asyncio.gather(*(self._land(target, behind) for target, behind in landings))
        LAKE_COMMITS.labels(self._encoder.layer, dataset).inc(len(landings))
        for target, behind in landings:
            for tp, flush in behind.items():
                self._landed[tp][target.path] = flush.last
        LANDED_RECORDS.labels(self._encoder.layer, dataset).inc(fresh)
        FLUSH_SECONDS.labels(self._encoder.layer).observe(time.perf_counter() - started)
        async with self._commit_lock:
            try:
                await self.consumer.commit({tp: flush.last + 1 for tp, flush in flushes.items()})
            except (CommitFailedError, IllegalStateError) as exc:
                # Only the lag report is lost: the tables' transaction versions say what landed.
                log.info("offset report refused", topic=next(iter(group)).topic, error=str(exc))

    async def _land(self, target: TableTarget, behind: dict[TopicPartition, _Flush]) -> None:
        """One commit of the partitions' rows to one table, exactly once (see :meth:`Tables.append_new`)."""
        parts = [(Landed(self._app_id(tp), flush.last), flush, self._landed[tp][target.path])
                 for tp, flush in behind.items()]
        marks = [mark for mark, _, _ in parts]

        def rows_after(versions: dict[str, int | None]) -> pa.Table:
            return _concat(target, [flush.rows(target, max(known, _landed_offset(versions.get(mark.app_id))))
                                    for mark, flush, known in parts])

        def commit(table: DeltaTable) -> None:
            started = time.perf_counter()
            if target.merge_keys is None:
                self._tables.append_new(table, marks, rows_after)
            else:  # a key lives in one partition (topics are keyed by it): the partitions' rows never collide
                self._tables.merge(table, _concat(target, [flush.rows(target, known) for _, flush, known in parts]),
                                   target.merge_keys, marks, target.newer_when)
            COMMIT_SECONDS.labels(self._encoder.layer).observe(time.perf_counter() - started)

        await self._with_table(target, commit)

    # --- rebalance hooks ---------------------------------------------------------------------
    async def release_partitions(self, revoked: Collection[TopicPartition]) -> None:
        """Let the revoked partitions' running flushes land; drop their unlanded rest."""
        for tp in revoked:
            self._buffers.pop(tp, None)
        await self._drain(revoked)
        for tp in revoked:
            self._landed.pop(tp, None)

    async def recover_partitions(self, assigned: Collection[TopicPartition]) -> None:
        for tp in assigned:
            await self._recover_partition(tp)
            self.mark_ready(tp)

    async def _recover_partition(self, tp: TopicPartition) -> None:
        """Read what each table of the partition's dataset holds of it and resume after the lowest
        (records fetched meanwhile are not buffered).

        The lake may be down right now: the reads are retried until it answers, since a partition
        must never be landed without knowing what its tables hold."""
        committed = await self.consumer.committed(tp)
        reported = -1 if committed is None else committed - 1
        app = self._app_id(tp)

        def version(table: DeltaTable) -> int | None:
            table.update_incremental()
            return self._tables.landed_version(table, app)

        landed: dict[str, int] = {}
        for target in self._encoder.targets(names.dataset_of(tp.topic)):
            held = await self._with_table(target, version)
            landed[target.path] = reported if held is None else held
        self._landed[tp] = landed
        resume = min(landed.values()) + 1
        if resume == 0:
            await self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, resume)
        self._buffers.pop(tp, None)
        log.info("partition resumes after its tables' versions", topic=tp.topic, partition=tp.partition,
                 resume=resume, committed=committed)

    # --- the tables --------------------------------------------------------------------------
    def _app_id(self, tp: TopicPartition) -> str:
        return names.app_id(self.group_id, tp.topic, tp.partition)

    async def _with_table(self, target: TableTarget, use: Callable[[DeltaTable], T]) -> T:
        """``use`` the target's table (created or evolved at first use) in a thread, one call at a time
        per table, retried without limit while the lake is down."""
        async with self._table_locks[target.path]:
            async for attempt in backoff("lake call", retry_on=LAKE_ERRORS, first_s=0.2, max_s=5,
                                         layer=self._encoder.layer, table=target.path):
                with attempt:
                    return await asyncio.to_thread(self._use_table, target, use)
                LAKE_RETRIES.labels(self._encoder.layer).inc()  # the attempt failed: it will be retried
        raise AssertionError("unreachable: a backoff without stop event or deadline never gives up")

    def _use_table(self, target: TableTarget, use: Callable[[DeltaTable], T]) -> T:
        table = self._handles.get(target.path)
        if table is None:
            table = self._handles[target.path] = self._tables.ensure(target.path, target.schema, target.partition_by)
        return use(table)


def _landed_offset(version: int | None) -> int:
    """A table's transaction version for an app as an offset: -1 when the app landed nothing yet."""
    return -1 if version is None else version


def _concat(target: TableTarget, parts: list[pa.Table]) -> pa.Table:
    """Several partitions' rows for one table as one table (its schema when there are none)."""
    parts = [part for part in parts if part.num_rows]
    if not parts:
        return target.schema.empty_table()
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")


async def prepare_tables(settings: Settings, targets: Sequence[TableTarget], stop: asyncio.Event) -> bool:
    """Create or evolve every table a service lands in before its consumers start, so that a contract that
    cannot evolve an existing table stops the service at once (:class:`~archlab.lake.tables.SchemaChangeError`
    naming each field and what to do), before any record is processed under it and with no table changed.

    A lake that cannot be reached now does not hold the service back: the sink ensures each table again
    when its partitions are assigned (retrying until the lake is back), where a refusal stops it just the
    same. False when ``stop`` came first."""
    tables = Tables.from_settings(settings)
    try:
        await asyncio.to_thread(tables.ensure_targets, targets)
    except LAKE_ERRORS as exc:
        log.warning("lake unreachable at start; tables are checked when partitions are assigned", error=str(exc))
    return not stop.is_set()


async def land(
    settings: Settings, encoder: BatchEncoder, topics: list[str], group: str, stop: asyncio.Event
) -> None:
    """Run a LakeSink for ``topics`` in consumer group ``group`` until ``stop``: every service's
    lake landing (bronze, silver, quarantine, dq, gold)."""
    tables = Tables.from_settings(settings)
    policy = RollPolicy(settings.flush_records, settings.flush_bytes, settings.flush_interval_s)

    def sink(consumer: AIOKafkaConsumer, _: object) -> LakeSink:
        return LakeSink(consumer, tables, encoder, group_id=group, policy=policy)

    # Smaller fetches than the processing stages: a sink buffers whole files anyway, and its memory
    # is fetches plus buffers for every partition.
    await run_stage(settings, sink, topics, group, stop, max_partition_fetch_bytes=2 * MIB, fetch_max_bytes=16 * MIB)
