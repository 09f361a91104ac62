"""Raw to silver + quarantine, exactly once: one Kafka transaction per consumed batch.

Each batch of raw records is refined by the contract (vectorised, :mod:`archlab.pipeline.silver.refine`), its
valid rows de-duplicated, and then, inside ONE transaction (:mod:`archlab.streaming.transactional`): valid
rows go to ``<dataset>.silver``, invalid ones to ``<dataset>.quarantine``, the new
de-duplication keys to the changelog, the batch's quality counts to ``<dataset>.dq``, and the
consumed offsets to the consumer group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import compress

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram

from archlab.contract import Contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import partition_for
from archlab.lake.store import CALENDAR_SECONDS
from archlab.pipeline.silver.dedup import DedupState, encode_event_ms, read_changelog
from archlab.pipeline.silver.refine import RAW_SCHEMA, Refiner, RuleOutcome
from archlab.pipeline.wire import quarantine_json, silver_json
from archlab.streaming.transactional import Fetched, TransactionalProcessor

log = structlog.get_logger(__name__)

REFINED = Counter("lab_refined_records_total", "Raw records refined, by outcome", ["dataset", "outcome"])
RULE_OUTCOMES = Counter("lab_dq_rule_total", "Quality checks per rule, by outcome", ["dataset", "rule", "outcome"])
BATCH_SECONDS = Histogram("lab_silver_emit_seconds", "De-duplicating and queueing one refined batch", ["dataset"])
DEDUP_KEYS = Gauge("lab_dedup_keys", "De-duplication keys held (in local RocksDB stores)")

def raw_table(records: Sequence[ConsumerRecord]) -> pa.Table:
    """The raw records of a batch (any partitions of one topic) as the refiner's input table."""
    return pa.Table.from_arrays(
        [
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
        ],
        schema=RAW_SCHEMA,
    )


def _coordinates(partition: pa.ChunkedArray | pa.Array, offset: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One int64 per (partition, offset): partition in the high bits."""
    return pc.add(pc.shift_left(pc.cast(partition, pa.int64()), 44), pc.cast(offset, pa.int64()))


def dedup_keys(valid: pa.Table, contract: Contract) -> list[bytes]:
    """The de-duplication key of every valid row, its fields joined by ``|``."""
    columns = [pc.cast(valid[name], pa.string()) for name in contract.dedup.key]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "|")
    return [value.encode() for value in pc.fill_null(joined, "").to_pylist()]


def kafka_keys(table: pa.Table, contract: Contract) -> list[bytes | None]:
    """The Kafka key of every silver row: the contract key fields joined by ``|``."""
    columns = [pc.cast(table[name], pa.string()) for name in contract.key]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "|")
    return [None if value is None else value.encode() for value in joined.to_pylist()]


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One dataset's share of a fetched batch, refined and encoded for its topics before the transaction:
    everything that does not depend on de-duplication state, which only ``emit`` may read (in log order)."""

    dataset: str
    records: list[ConsumerRecord]
    rules: dict[str, RuleOutcome]
    dedup_keys: list[bytes]  # per valid row
    event_ms: list[int]
    source_partitions: list[int]
    silver: tuple[list[bytes | None], list[bytes], list[int] | None]  # keys, values, partitions (None: by key)
    quarantine: tuple[list[bytes | None], list[bytes], list[int] | None]


class SilverRefiner(TransactionalProcessor):
    """Consume raw, refine, de-duplicate and produce the outcome transactionally, batch by batch."""

    prepare_ahead = True  # refining reads only the batch and the contract; de-duplication is in emit

    def __init__(
        self,
        settings: Settings,
        contracts: dict[str, Contract],
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        *,
        group_id: str,
        max_batch: int = 5_000,
    ) -> None:
        super().__init__(consumer, producer, group_id=group_id, max_batch=max_batch)
        self.settings = settings
        self.contracts = contracts
        self.refiners = {name: Refiner(contract, settings.contracts_dir) for name, contract in contracts.items()}
        self.dedup = {
            names.raw_topic(name): DedupState(int(contract.dedup.horizon.total_seconds() * 1000))
            for name, contract in contracts.items()
        }
        self._raw_partitions: dict[str, int] = {}

    def dedup_for(self, raw_topic: str) -> DedupState:
        return self.dedup[raw_topic]

    async def run(self, stop: asyncio.Event) -> None:
        for name in self.contracts:
            await self.open_senders([names.silver_topic(name), names.quarantine_topic(name), names.dedup_topic(name),
                                     names.dq_topic(name)])
            raw = names.raw_topic(name)
            self._raw_partitions[raw] = len(await self.producer.partitions_for(raw))
        await super().run(stop)

    def forget(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.dedup_for(tp.topic).drop(tp)

    async def restore(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            entries = await read_changelog(self.settings, names.dataset_of(tp.topic), tp.partition)
            # Writing a day of keys to the partition's store takes a while: not on the loop that heartbeats.
            await asyncio.to_thread(self.dedup_for(tp.topic).restore, tp, entries)

    def committed(self) -> None:
        DEDUP_KEYS.set(sum(state.size() for state in self.dedup.values()))

    async def prepare(self, fetched: Fetched) -> list[_Encoded]:
        """Refine and encode each dataset's share of a batch in one vectorised pass, off the event loop."""
        by_topic: dict[str, list[ConsumerRecord]] = {}
        for tp, records in fetched.items():
            by_topic.setdefault(tp.topic, []).extend(records)
        return [await asyncio.to_thread(self._encode, topic, records) for topic, records in by_topic.items()]

    def _encode(self, topic: str, records: list[ConsumerRecord]) -> _Encoded:
        dataset = names.dataset_of(topic)
        contract = self.contracts[dataset]
        raw = raw_table(records)
        result = self.refiners[dataset].refine(raw)
        valid, invalid = result.valid, result.invalid
        as_ms = pc.cast(valid[contract.event_time], pa.timestamp("ms", tz="UTC"), safe=False)  # drops sub-ms digits
        silver_keys = kafka_keys(valid, contract)
        quarantine: tuple[list[bytes | None], list[bytes], list[int] | None] = ([], [], None)
        if invalid.num_rows:
            rows = pc.index_in(_coordinates(invalid["source_partition"], invalid["source_offset"]),
                               value_set=_coordinates(raw["partition"], raw["offset"]))
            same_layout = self.senders[names.quarantine_topic(dataset)].partitions == self._raw_partitions[topic]
            quarantine = (raw["key"].take(rows).to_pylist(), quarantine_json(invalid),
                          invalid["source_partition"].to_pylist() if same_layout else None)
        return _Encoded(
            dataset, records, result.rules, dedup_keys(valid, contract), pc.cast(as_ms, pa.int64()).to_pylist(),
            valid["_source_partition"].to_pylist(),
            (silver_keys, silver_json(valid), self._silver_partitions(topic, valid, raw, silver_keys)), quarantine,
        )

    async def emit(self, prepared: list[_Encoded]) -> None:
        """De-duplicate each dataset's refined rows and queue its outputs."""
        for encoded in prepared:
            await self._emit(encoded)

    async def _emit(self, batch: _Encoded) -> None:
        """De-duplicate one dataset's refined rows and queue silver, quarantine, changelog and dq."""
        dataset = batch.dataset
        started = time.perf_counter()
        first = self.dedup_for(names.raw_topic(dataset)).first_seen(
            names.raw_topic(dataset), batch.source_partitions, batch.dedup_keys, batch.event_ms)
        duplicates = first.count(False)
        keys, values, partitions = batch.silver
        values = list(compress(values, first))
        await self.senders[names.silver_topic(dataset)].send_many(
            list(compress(keys, first)), values, None if partitions is None else list(compress(partitions, first)))
        if batch.quarantine[1]:
            await self.senders[names.quarantine_topic(dataset)].send_many(*batch.quarantine)
        new_partitions, new_keys, new_ms = (list(compress(column, first)) for column in
                                            (batch.source_partitions, batch.dedup_keys, batch.event_ms))
        if new_keys:
            await self.senders[names.dedup_topic(dataset)].send_many(new_keys, encode_event_ms(new_ms), new_partitions)
        await self._send_quality(dataset, batch.records, batch.rules, len(first) - duplicates, duplicates)

        REFINED.labels(dataset, "silver").inc(len(values))
        REFINED.labels(dataset, "quarantine").inc(len(batch.quarantine[1]))
        REFINED.labels(dataset, "duplicate").inc(duplicates)
        BATCH_SECONDS.labels(dataset).observe(time.perf_counter() - started)

    def _silver_partitions(
        self, topic: str, valid: pa.Table, raw: pa.Table, keys: list[bytes | None]
    ) -> list[int] | None:
        """Where each silver record goes: where its key hashes. A row whose raw record carried the
        same key into a topic of as many partitions is already there, so only the others are hashed."""
        silver = self.senders[names.silver_topic(names.dataset_of(topic))]
        if silver.partitions != self._raw_partitions[topic]:
            return None
        rows = pc.index_in(_coordinates(valid["_source_partition"], valid["_source_offset"]),
                           value_set=_coordinates(raw["partition"], raw["offset"]))
        raw_keys = raw["key"].take(rows).to_pylist()
        return [
            source if key is None or key == raw_key else partition_for(key, silver.partitions)
            for source, key, raw_key in zip(valid["_source_partition"].to_pylist(), keys, raw_keys, strict=True)
        ]

    async def _send_quality(
        self, dataset: str, records: list[ConsumerRecord], rules: dict[str, RuleOutcome], unique: int,
        duplicates: int,
    ) -> None:
        """One ``dq`` row per check for this batch, stamped with the minute its first record arrived.

        ``failed`` counts a check's failures (a row failing three checks counts in each of them); the
        de-duplication check passes the valid rows seen for the first time (``unique``).
        """
        first = min(max(records[0].timestamp // 60_000 * 60, CALENDAR_SECONDS[0]), CALENDAR_SECONDS[1] - 60)
        minute = datetime.fromtimestamp(first, UTC).isoformat().replace("+00:00", "Z")
        sender = self.senders[names.dq_topic(dataset)]
        rows = {name: (o.passed, o.failed, o.warned) for name, o in rules.items()}
        rows["duplicates"] = (unique, duplicates, 0)
        for rule, (passed, failed, warned) in sorted(rows.items()):
            for outcome, count in (("passed", passed), ("failed", failed), ("warned", warned)):
                if count:
                    RULE_OUTCOMES.labels(dataset, rule, outcome).inc(count)
            value = orjson.dumps({"dataset": dataset, "minute": minute, "rule": rule, "passed": passed,
                                  "failed": failed, "warned": warned, "records": len(records)})
            await sender.send(rule.encode(), value)


DQ_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("minute", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("passed", pa.int64(), nullable=False),
        pa.field("failed", pa.int64(), nullable=False),
        pa.field("warned", pa.int64(), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
    ]
)

