"""Silver to gold, exactly once, in two transactional stages.

An exact ``count_distinct`` per window and group needs every event of that window in one place,
but silver is partitioned by the contract key. So:

1. :class:`Shuffler` reads ``<dataset>.silver`` and re-keys each record, unchanged, by its *time
   bucket* (event time floored to the least common multiple of the aggregates' window sizes) into
   ``<dataset>.gold-shuffle``. Every window of every aggregate lies inside one bucket, so one
   shuffle partition owns all of a window's events. After each batch it sends every shuffle
   partition a *watermark marker*: the highest event time it has read from each silver partition.
2. :class:`Aggregator` reads the shuffle partitions, keeps their windows
   (:class:`~archlab.pipeline.gold.windows.PartitionWindows`) and emits each window it touched to the compacted
   ``<dataset>.gold`` topic, keyed ``[aggregate, window start, dimensions…]``. Its state is a
   changelog of deltas (``<dataset>.gold-state``) written in the same transaction, checkpointed
   after each commit in a local RocksDB (:mod:`archlab.pipeline.gold.window_store`) so a restart reads only
   the changelog's tail.

Both stages commit output and offsets in one Kafka transaction per batch
(:mod:`archlab.streaming.transactional`), so neither doubles nor drops across ``kill -9``. The aggregation
is a pure function of the shuffle log, so a retried batch gives the same gold records. Cost of
the design: the live stream's current bucket sits in one shuffle partition (one aggregator works
on it at a time); replays and backfills spread over many buckets.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge

from archlab.contract import Contract
from archlab.core import names, sql
from archlab.core.settings import Settings
from archlab.kafka.clients import KeyedBatchSender, end_offsets, partition_for, partitions_for, read_to_end
from archlab.pipeline.gold.window_store import (
    HIGHEST,
    CheckpointRows,
    TailReplay,
    WindowStore,
    checkpoint_rows,
    delta_state,
    window_key_bytes,
)
from archlab.pipeline.gold.windows import BatchOutcome, PartitionWindows, iso_ms
from archlab.pipeline.wire import from_wire_json
from archlab.streaming.transactional import Fetched, TransactionalProcessor

log = structlog.get_logger(__name__)

MARKER_PREFIX = b"~watermark/"
_T = TypeVar("_T")

SHUFFLED = MetricCounter("lab_gold_shuffled_records_total", "Silver records re-keyed by time bucket", ["dataset"])
AGGREGATED = MetricCounter("lab_gold_events_total", "Silver events aggregated, by timeliness", ["dataset", "aggregate", "timeliness"])
GOLD_UPDATES = MetricCounter("lab_gold_updates_total", "Gold records emitted", ["dataset", "aggregate"])
OPEN_WINDOWS = Gauge("lab_gold_windows", "Windows held in memory", ["dataset"])
WATERMARK = Gauge("lab_gold_watermark_seconds", "Event-time watermark (epoch seconds)", ["dataset"])
RESTORES = MetricCounter(
    "lab_gold_restores_total",
    "Shuffle partitions whose windows were restored, by starting point: the local checkpoint then the "
    "changelog's tail (source=checkpoint), or the whole changelog (source=changelog)",
    ["dataset", "source"],
)
WINDOWS_RESTORED = MetricCounter("lab_gold_windows_restored_total", "Windows held by shuffle partitions just restored",
                           ["dataset"])


def bucket_ms(contract: Contract) -> int:
    """The time bucket that holds whole windows of every aggregate: the LCM of their sizes."""
    return math.lcm(*(a.window_ms for a in contract.aggregates))


def event_ms(values: list[bytes], contract: Contract) -> np.ndarray:
    """The event time (epoch ms) of silver JSON records, reading only that field."""
    data = b"\n".join(values)
    table = pj.read_json(
        pa.BufferReader(data),
        read_options=pj.ReadOptions(block_size=len(data) + 1),
        parse_options=pj.ParseOptions(
            explicit_schema=pa.schema([pa.field(contract.event_time, pa.string())]),
            unexpected_field_behavior="ignore",
        ),
    )
    times = table[contract.event_time].cast(pa.timestamp("us", tz="UTC"))
    return pc.divide(pc.cast(times, pa.int64()), 1000).to_numpy(zero_copy_only=False)


def _log_failed_checkpoint(saving: Future[None]) -> None:
    """A checkpoint that failed to land is only an older starting point for the next restore."""
    if saving.exception() is not None:
        log.error("gold checkpoint not written", error=repr(saving.exception()))


def with_aggregates(contracts: dict[str, Contract]) -> dict[str, Contract]:
    return {name: contract for name, contract in contracts.items() if contract.aggregates}


class Shuffler(TransactionalProcessor):
    """Stage 1: silver re-keyed by time bucket, plus watermark markers; stateless."""

    def __init__(
        self, contracts: dict[str, Contract], consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
        *, group_id: str, max_batch: int,
    ) -> None:
        super().__init__(consumer, producer, group_id=group_id, max_batch=max_batch)
        self.contracts = with_aggregates(contracts)

    async def run(self, stop: asyncio.Event) -> None:
        await self.open_senders([names.gold_shuffle_topic(name) for name in self.contracts])
        await super().run(stop)

    async def emit(self, prepared: Fetched) -> None:
        for tp, records in prepared.items():
            dataset = names.dataset_of(tp.topic)
            contract = self.contracts[dataset]
            sender = self.senders[names.gold_shuffle_topic(dataset)]
            times = event_ms([r.value for r in records], contract)
            size = bucket_ms(contract)
            buckets = times // size * size
            labels = {int(b): iso_ms(int(b)).encode() for b in np.unique(buckets)}
            partitions = {b: partition_for(label, sender.partitions) for b, label in labels.items()}
            keys = [labels[b] for b in buckets.tolist()]
            await sender.send_many(keys, [r.value for r in records], [partitions[b] for b in buckets.tolist()])
            marker = orjson.dumps({"silver_partition": tp.partition, "highest_event_ms": int(times.max())})
            for partition in range(sender.partitions):
                await sender.send(MARKER_PREFIX + str(tp.partition).encode(), marker, partition=partition)
            SHUFFLED.labels(dataset).inc(len(records))


@dataclass(slots=True)
class _Prepared:
    """One shuffle partition's batch, aggregated (state already advanced) and encoded, ready to be sent:
    the encoding is done off the event loop, so the loop only hands ready bytes to the producer."""

    tp: TopicPartition
    dataset: str
    outcome: BatchOutcome
    revision: int
    first_kafka_ms: int
    gold: tuple[list[bytes], list[bytes], list[int]]  # keys, values, partitions of <dataset>.gold
    state: tuple[list[bytes], list[bytes | None]]  # deltas, tombstones, highest: keys and values
    checkpoint: CheckpointRows  # what the local store saves once the transaction committed
    updates: Counter[str]  # gold records per aggregate
    watermark: int | None


SEND_SLICE = 2_000
"""Records handed to the producer between two yields to the event loop: heartbeats and fetches keep
flowing while a batch that touched many windows is sent."""
WINDOWS_PER_TRANSACTION = 20_000
"""The windows one transaction may touch, about: the batch size adapts to the windows per event seen
(high cardinality, events out of order) so that a transaction stays far below its timeout."""
SMALLEST_BATCH = 500


async def send_in_slices(sender: KeyedBatchSender, keys: list[bytes], values: list[bytes | None],
                         partitions: list[int]) -> None:
    """``send_many`` in slices of ``SEND_SLICE``, yielding to the event loop between them."""
    for at in range(0, len(keys), SEND_SLICE):
        part = slice(at, at + SEND_SLICE)
        await sender.send_many(keys[part], values[part], partitions[part])
        await asyncio.sleep(0)


class Aggregator(TransactionalProcessor):
    """Stage 2: the windows of the shuffle partitions it owns; emits gold and state deltas.

    Nothing long runs on the event loop, which must keep the consumer's heartbeats going (a member
    silent past the session timeout is evicted and its batch thrown away): aggregation and the
    encoding of every touched window run in a worker thread before the transaction opens, the loop
    sends the ready records in slices, and the local checkpoint is written by one store thread, in
    commit order, after each commit."""

    def __init__(
        self, settings: Settings, contracts: dict[str, Contract], consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer, *, group_id: str, max_batch: int, state_dir: Path,
    ) -> None:
        super().__init__(consumer, producer, group_id=group_id, max_batch=max_batch)
        self.settings = settings
        self.contracts = with_aggregates(contracts)
        self.partitions: dict[TopicPartition, PartitionWindows] = {}
        self.store = WindowStore(state_dir)
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="gold-store")  # one: writes in commit order
        self._largest_batch = max_batch
        self._unsaved: list[_Prepared] = []  # emitted in the open transaction, saved once it commits
        self.silver_partitions: dict[str, int] = {}
        self.con = sql.connect()

    async def run(self, stop: asyncio.Event) -> None:
        for name in self.contracts:
            await self.open_senders([names.gold_topic(name), names.gold_state_topic(name), names.dq_topic(name)])
        await super().run(stop)

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self._store_thread.shutdown)  # the last checkpoints land

    async def _in_store_thread(self, call: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call, *args)

    def _windows(self, tp: TopicPartition) -> PartitionWindows:
        dataset = names.dataset_of(tp.topic)
        return self.partitions.setdefault(
            tp, PartitionWindows(self.contracts[dataset], self.silver_partitions[dataset])
        )

    async def restore(self, assigned: list[TopicPartition]) -> None:
        """Rebuild the assigned shuffle partitions' windows: each one's local checkpoint, then its state
        changelog after it (read_committed), or all of it when there is no checkpoint, all partitions in
        one read. Counted in ``lab_gold_restores_total`` by that starting point, and the windows found
        in ``lab_gold_windows_restored_total``: what a restart really restored, observable from outside."""
        checkpoints: dict[TopicPartition, int | None] = {}
        changelogs: dict[TopicPartition, TopicPartition] = {}
        for tp in assigned:
            dataset = names.dataset_of(tp.topic)
            if dataset not in self.silver_partitions:
                self.silver_partitions[dataset] = len(await self.producer.partitions_for(names.silver_topic(dataset)))
            self.partitions.pop(tp, None)
            checkpoints[tp] = await self._in_store_thread(self.store.load, dataset, tp.partition, self._windows(tp))
            changelogs[tp] = TopicPartition(names.gold_state_topic(dataset), tp.partition)
        ends = await end_offsets(self.settings, list(changelogs.values()))
        for tp, checkpoint in checkpoints.items():
            if checkpoint is not None and checkpoint >= ends[changelogs[tp]]:
                log.warning("gold checkpoint is ahead of its changelog (topics recreated?): ignored",
                            topic=tp.topic, partition=tp.partition, checkpoint=checkpoint)
                await self._in_store_thread(self.store.clear, names.dataset_of(tp.topic), tp.partition)
                self.partitions.pop(tp, None)
                checkpoints[tp] = None
        tails = {changelogs[tp]: TailReplay(self._windows(tp), self.store, names.dataset_of(tp.topic), tp.partition)
                 for tp in assigned}
        start = {changelogs[tp]: checkpoint + 1 for tp, checkpoint in checkpoints.items() if checkpoint is not None}
        async for records in read_to_end(self.settings, list(tails), start=start):
            await self._in_store_thread(tails[TopicPartition(records[0].topic, records[0].partition)].apply, records)
        for tp, checkpoint in checkpoints.items():
            dataset, tail, windows = names.dataset_of(tp.topic), tails[changelogs[tp]], self.partitions[tp]
            await self._in_store_thread(tail.finish)
            RESTORES.labels(dataset, "changelog" if checkpoint is None else "checkpoint").inc()
            WINDOWS_RESTORED.labels(dataset).inc(len(windows.windows))
            log.info("gold state restored", topic=tp.topic, partition=tp.partition, windows=len(windows.windows),
                     checkpoint=checkpoint, changelog_records_applied=tail.applied)

    def forget(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.partitions.pop(tp, None)
            self._store_thread.submit(self.store.close, names.dataset_of(tp.topic), tp.partition)

    def committed(self) -> None:
        """The transaction committed: checkpoint what it wrote to the local store (rows encoded when the
        batch was prepared, so the checkpoint holds committed state only, whatever comes next)."""
        for batch in self._unsaved:
            last = self.senders[names.gold_state_topic(batch.dataset)].last_offsets.get(batch.tp.partition)
            if batch.tp not in self.partitions or last is None:
                continue
            saving = self._store_thread.submit(self.store.write, batch.dataset, batch.tp.partition,
                                               batch.checkpoint, last)
            saving.add_done_callback(_log_failed_checkpoint)
        self._unsaved.clear()
        for dataset in self.contracts:
            OPEN_WINDOWS.labels(dataset).set(
                sum(len(w.windows) for tp, w in self.partitions.items() if names.dataset_of(tp.topic) == dataset)
            )

    async def prepare(self, fetched: Fetched) -> list[_Prepared]:
        prepared = [await asyncio.to_thread(self._aggregate, tp, records) for tp, records in fetched.items()]
        self._fit_batch(sum(map(len, fetched.values())), sum(len(p.outcome.touched) for p in prepared))
        return prepared

    def _fit_batch(self, records: int, touched: int) -> None:
        """Size the next fetch so that it touches about ``WINDOWS_PER_TRANSACTION`` windows at most."""
        if records and touched:
            fitting = int(WINDOWS_PER_TRANSACTION * records / touched)
            self.max_batch = max(SMALLEST_BATCH, min(self._largest_batch, fitting))

    def _aggregate(self, tp: TopicPartition, records: list[ConsumerRecord]) -> _Prepared:
        """Advance the partition's windows by one batch (the per-event watermark read in log order) and
        encode what it changed: gold records, changelog deltas, checkpoint rows (in a worker thread)."""
        windows = self._windows(tp)
        contract = windows.contract
        values: list[bytes] = []
        marks: list[int | None] = []
        watermark = windows.watermark()
        for record in records:
            if record.key.startswith(MARKER_PREFIX):
                marker = orjson.loads(record.value)
                watermark = windows.report(marker["silver_partition"], marker["highest_event_ms"])
            else:
                values.append(record.value)
                marks.append(watermark)
        batch = from_wire_json(values, contract.gold_inputs, other_fields="ignore")  # only what aggregates read
        batch = batch.append_column("_watermark", pa.array(marks, pa.int64()))
        revision = records[-1].offset
        outcome = windows.apply(self.con, batch, revision=revision)
        dataset = names.dataset_of(tp.topic)
        gold_keys, gold_values, state_keys, state_values = [], [], [], []
        deltas: dict[bytes, bytes] = {}
        updates: Counter[str] = Counter()
        for key, (window, change) in outcome.touched.items():
            gold_keys.append(orjson.dumps([key[0], iso_ms(key[1]), *key[2]]))
            gold_values.append(orjson.dumps(windows.gold_value(key, window)))
            updates[key[0]] += 1
            if key in outcome.dropped:
                continue  # forgotten: its deltas are tombstoned below
            delta_key = window_key_bytes(key) + b"@" + str(revision).encode()
            deltas[delta_key] = delta_state(window, windows.plans[key[0]], change.new_members, key)
            window.deltas.append(delta_key)
        state_keys.extend(deltas)
        state_values.extend(deltas.values())
        for window in outcome.dropped.values():
            state_keys.extend(window.deltas)
            state_values.extend([None] * len(window.deltas))
        state_keys.append(HIGHEST)
        state_values.append(orjson.dumps({str(p): ms for p, ms in windows.highest.items()}))
        gold_partitions = self.senders[names.gold_topic(dataset)].partitions
        changed = {key: window for key, (window, _) in outcome.touched.items()}
        forgotten = {key: window.deltas for key, window in outcome.dropped.items()}
        return _Prepared(
            tp, dataset, outcome, revision, records[0].timestamp,
            gold=(gold_keys, gold_values, partitions_for(gold_keys, gold_partitions)),
            state=(state_keys, state_values),
            checkpoint=checkpoint_rows(windows, changed, deltas, forgotten),
            updates=updates, watermark=windows.watermark(),
        )

    async def emit(self, prepared: list[_Prepared]) -> None:
        for batch in prepared:
            await self._emit(batch)
        self._unsaved = prepared

    async def _emit(self, batch: _Prepared) -> None:
        await send_in_slices(self.senders[names.gold_topic(batch.dataset)], *batch.gold)
        keys, values = batch.state
        await send_in_slices(self.senders[names.gold_state_topic(batch.dataset)], keys, values,
                             [batch.tp.partition] * len(keys))
        for aggregate, count in batch.updates.items():
            GOLD_UPDATES.labels(batch.dataset, aggregate).inc(count)
        await self._send_lateness(batch)
        if batch.watermark is not None:
            WATERMARK.labels(batch.dataset).set(batch.watermark / 1000)

    async def _send_lateness(self, batch: _Prepared) -> None:
        """Per aggregate, on-time and too-late events of the batch: a ``dq`` row and a metric."""
        minute = datetime.fromtimestamp(batch.first_kafka_ms // 60_000 * 60, UTC).isoformat().replace("+00:00", "Z")
        for aggregate, on_time in batch.outcome.on_time.items():
            late = batch.outcome.late.get(aggregate, 0)
            AGGREGATED.labels(batch.dataset, aggregate, "on_time").inc(on_time)
            AGGREGATED.labels(batch.dataset, aggregate, "late").inc(late)
            if not late and not on_time:
                continue
            rule = f"late_beyond_grace.{aggregate}"
            row = {"dataset": batch.dataset, "minute": minute, "rule": rule, "passed": on_time, "failed": late,
                   "warned": 0, "records": on_time + late}
            await self.senders[names.dq_topic(batch.dataset)].send(rule.encode(), orjson.dumps(row))
