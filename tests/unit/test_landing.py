"""The landing mechanism without a broker: encoders, and the lake sink over an in-memory partition log
landing in Delta tables in a local folder (each flush one commit per table, exactly once)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from archlab.core import names
from archlab.lake.store import Lake
from archlab.lake.tables import Landed, Tables, TableTarget
from archlab.pipeline.bronze import BRONZE_SCHEMA, BronzeEncoder
from archlab.streaming.lake_sink import LakeSink, RollPolicy

DATASET = "shop"
TP = TopicPartition(names.raw_topic(DATASET), 2)
BRONZE = names.table_path("bronze", DATASET)
COPY = names.table_path("quarantine", DATASET)  # any second table path


def _records(start: datetime, count: int, step: timedelta, first_offset: int = 100) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(TP.topic, TP.partition, first_offset + i, int((start + i * step).timestamp() * 1000), 0,
                       f"k{i}".encode(), b"\xff" + str(i).encode(), None, 1, 2, [("h", b"v")] if i % 2 else [])
        for i in range(count)
    ]


def test_bronze_encoder_keeps_bytes_and_coordinates_and_dates_by_ingestion() -> None:
    records = _records(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC), 3, timedelta(seconds=1))
    (path, table), = BronzeEncoder().encode(records).items()
    assert path == BRONZE and BronzeEncoder().targets(DATASET)[0].path == BRONZE
    assert table.schema.equals(BRONZE_SCHEMA)
    assert table.column("value").to_pylist() == [r.value for r in records]
    assert table.column("offset").to_pylist() == [100, 101, 102]
    assert table.column("headers").to_pylist()[1] == [{"key": "h", "value": b"v"}]
    assert [str(d) for d in table.column(names.DATE_PARTITION).to_pylist()] == ["2026-01-01", "2026-01-02", "2026-01-02"]


def test_timestamps_past_the_calendar_are_dated_at_its_edges_and_keep_their_values() -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 3, timedelta(seconds=1))
    records[0].timestamp = 10**16  # a producer may choose any int64
    records[2].timestamp = -(10**15)
    table = BronzeEncoder().encode(records)[BRONZE]
    assert [str(d) for d in table.column(names.DATE_PARTITION).to_pylist()] == ["9999-12-31", "2026-01-01", "0001-01-01"]
    assert table["kafka_timestamp"].cast("int64").to_pylist()[::2] == [10**16, -(10**15)]


# ------------------------------------------------------------------------------------- the sink
class Crash(BaseException):
    """The process dies here (not an error any code handles)."""


class PartitionLog:
    """What the lake sink asks of an AIOKafkaConsumer, over one partition held in memory (fetched 50 at a time)."""

    def __init__(self, records: list[ConsumerRecord], committed: int | None = None,
                 crash_on_commit: bool = False) -> None:
        self.records = records
        self.position = records[0].offset
        self.reported = committed
        self.crash_on_commit = crash_on_commit
        self.paused = False

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        fetched = [] if self.paused else [r for r in self.records if r.offset >= self.position][:min(max_records, 50)]
        if not fetched:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.position = fetched[-1].offset + 1
        return {TP: fetched}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, tp: TopicPartition) -> None:
        self.paused = True

    def resume(self, tp: TopicPartition) -> None:
        self.paused = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.crash_on_commit:
            raise Crash
        self.reported = offsets[TP]

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.reported

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.position = self.records[0].offset


class TwoTables:
    """Bronze rows landed in two tables: how a sink with several targets (gold's aggregates) behaves."""

    layer = "bronze"

    def __init__(self, paths: Sequence[str] = (BRONZE, COPY)) -> None:
        self.paths = paths

    def targets(self, dataset: str) -> list[TableTarget]:
        return [TableTarget(path, BRONZE_SCHEMA, (names.DATE_PARTITION,)) for path in self.paths]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        table = BronzeEncoder().encode(records)[BRONZE]
        return dict.fromkeys(self.paths, table)


async def _land(tables: Tables, log: PartitionLog, encoder: object = None, flush_records: int = 100) -> None:
    """Assign the partition to a new sink, run it until it has read the whole log, then stop it gracefully."""
    sink = LakeSink(log, tables, encoder or BronzeEncoder(), group_id="g",  # type: ignore[arg-type]
                    policy=RollPolicy(flush_records, 1 << 30, 60))
    await sink.listener.on_partitions_assigned([TP])
    sink.raise_if_fatal()
    while log.position <= log.records[-1].offset:
        await sink.step()
    await sink.finish()


def _offsets(tables: Tables, path: str) -> list[int]:
    table = tables.read(path, ["offset"])
    return sorted(table["offset"].to_pylist()) if table is not None else []


def _landed(tables: Tables, path: str) -> int | None:
    table = tables.open(path)
    return None if table is None else tables.landed_version(table, names.app_id("g", TP.topic, TP.partition))


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Lake.local(tmp_path), None)


async def test_each_flush_lands_once_as_one_commit_carrying_its_last_offset(tables: Tables) -> None:
    log = PartitionLog(_records(datetime(2026, 1, 1, tzinfo=UTC), 250, timedelta(minutes=10)))
    await _land(tables, log)
    assert _offsets(tables, BRONZE) == list(range(100, 350))
    assert _landed(tables, BRONZE) == 349 and log.reported == 350  # Kafka's offset: the lag report
    history = tables.open(BRONZE).history()  # type: ignore[union-attr]
    assert [h["operation"] for h in history].count("WRITE") == 3  # 100 + 100 + the 50 left at the stop
    assert {str(d) for d in tables.read(BRONZE, [names.DATE_PARTITION])[names.DATE_PARTITION].to_pylist()} == {
        "2026-01-01", "2026-01-02"}  # type: ignore[index]


async def test_a_crash_between_the_delta_commit_and_the_kafka_commit_lands_nothing_twice(tables: Tables) -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 300, timedelta(seconds=1))
    with pytest.raises(Crash):
        await _land(tables, PartitionLog(records, crash_on_commit=True))
    assert _offsets(tables, BRONZE) == list(range(100, 200))  # the first flush committed to Delta, not to Kafka
    restarted = PartitionLog(records)  # no committed offset: Kafka would re-deliver everything
    await _land(tables, restarted, flush_records=70)  # and batch it differently
    assert _offsets(tables, BRONZE) == list(range(100, 400))
    assert _landed(tables, BRONZE) == 399 and restarted.reported == 400


async def test_tables_at_different_versions_resume_from_the_lowest_and_each_skips_what_it_holds(
    tables: Tables,
) -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 200, timedelta(seconds=1))
    await _land(tables, PartitionLog(records[:50]), TwoTables())  # both tables hold 100..149
    await _land(tables, PartitionLog(records[50:150]), TwoTables([BRONZE]))  # only bronze goes on to 249
    assert (_landed(tables, BRONZE), _landed(tables, COPY)) == (249, 149)
    log = PartitionLog(records, committed=250)
    await _land(tables, log, TwoTables(), flush_records=30)
    assert _offsets(tables, BRONZE) == _offsets(tables, COPY) == list(range(100, 300))
    assert (_landed(tables, BRONZE), _landed(tables, COPY)) == (299, 299)


async def test_a_new_table_of_a_running_group_starts_from_the_committed_offset(tables: Tables) -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 100, timedelta(seconds=1))
    log = PartitionLog(records, committed=150)  # e.g. landed before this table existed
    await _land(tables, log)
    assert _offsets(tables, BRONZE) == list(range(150, 200))


def test_append_new_makes_the_rows_again_when_another_writer_of_the_app_won_the_race(tables: Tables) -> None:
    """A replaced instance commits 100..149 between our read of the version and our commit of 100..199."""
    target = BronzeEncoder().targets(DATASET)[0]
    ours = tables.ensure(target.path, target.schema, target.partition_by)
    theirs = tables.open(target.path)
    rows = BronzeEncoder().encode(_records(datetime(2026, 1, 1, tzinfo=UTC), 100, timedelta(seconds=1)))[BRONZE]
    seen: list[int | None] = []

    def rows_after(versions: dict[str, int | None]) -> pa.Table:
        if not seen:
            tables.append(theirs, rows.slice(0, 50), [Landed("app", 149)])  # type: ignore[arg-type]
        version = versions["app"]
        seen.append(version)
        return rows.filter(pa.compute.greater(rows["offset"], -1 if version is None else version))

    tables.append_new(ours, [Landed("app", 199)], rows_after)
    assert seen == [None, 149]
    assert _offsets(tables, BRONZE) == list(range(100, 200))
