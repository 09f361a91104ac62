"""Pieces of the landing mechanism that need no broker: folder split, object names, local lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
from aiokafka.structs import ConsumerRecord

from archlab.core import names
from archlab.lake.store import Lake
from archlab.pipeline.bronze import BRONZE_SCHEMA, BronzeEncoder
from archlab.streaming.lake_sink import _split_by_folder


def _records(start: datetime, count: int, step: timedelta) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(names.raw_topic("shop"), 2, 100 + i, int((start + i * step).timestamp() * 1000), 0,
                       f"k{i}".encode(), b"\xff" + str(i).encode(), None, 1, 2, [("h", b"v")] if i % 2 else [])
        for i in range(count)
    ]


def test_bronze_encoder_keeps_bytes_and_coordinates() -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 3, timedelta(seconds=1))
    table = BronzeEncoder().encode(records)
    assert table.schema.equals(BRONZE_SCHEMA)
    assert table.column("value").to_pylist() == [r.value for r in records]
    assert table.column("offset").to_pylist() == [100, 101, 102]
    assert table.column("headers").to_pylist()[1] == [{"key": "h", "value": b"v"}]


def test_split_names_every_folder_after_the_batch_start_and_loses_no_row() -> None:
    records = _records(datetime(2026, 1, 1, 22, 50, tzinfo=UTC), 40, timedelta(minutes=3))  # spans 3 hours
    table = BronzeEncoder().encode(records)
    parts = list(_split_by_folder(table, BronzeEncoder(), "shop", partition=2, start=100))
    assert [key.rsplit("/", 3)[1:3] for key, _ in parts] == [
        ["dt=2026-01-01", "hour=22"], ["dt=2026-01-01", "hour=23"], ["dt=2026-01-02", "hour=00"]
    ]
    assert all(key.endswith("/part-002-00000000000000000100.parquet") for key, _ in parts)
    offsets = sorted(o for _, part in parts for o in part.column("offset").to_pylist())
    assert offsets == list(range(100, 140))


def test_split_files_timestamps_past_the_calendar_at_its_edges_and_keeps_their_values() -> None:
    records = _records(datetime(2026, 1, 1, tzinfo=UTC), 3, timedelta(seconds=1))
    records[0].timestamp = 10**16  # a producer may choose any int64
    records[2].timestamp = -(10**15)
    table = BronzeEncoder().encode(records)
    parts = dict(_split_by_folder(table, BronzeEncoder(), "shop", partition=2, start=100))
    folders = {key.rsplit("/", 3)[1] + "/" + key.rsplit("/", 3)[2]: part for key, part in parts.items()}
    assert sorted(folders) == ["dt=0001-01-01/hour=00", "dt=2026-01-01/hour=00", "dt=9999-12-31/hour=23"]
    assert folders["dt=9999-12-31/hour=23"]["kafka_timestamp"].cast("int64").to_pylist() == [10**16]
    assert folders["dt=0001-01-01/hour=00"]["kafka_timestamp"].cast("int64").to_pylist() == [-(10**15)]


def test_local_lake_round_trip_and_overwrite(tmp_path: Path) -> None:
    lake = Lake.local(tmp_path)
    table = BronzeEncoder().encode(_records(datetime(2026, 1, 1, tzinfo=UTC), 5, timedelta(seconds=1)))
    key = f"{names.partition_folder('bronze', 'shop', datetime(2026, 1, 1, tzinfo=UTC))}/part-000-1.parquet"
    lake.write_parquet(key, table)
    lake.write_parquet(key, table.slice(0, 2))  # a retry replaces, it never adds
    assert lake.list("bronze") == [key]
    assert pq.read_table(lake.path(key)).num_rows == 2
    lake.delete([key, key])
    assert lake.list("bronze") == []
