"""The `lab` command against the real stack: tail shows records safely, status adds up, and tables
and history tell a table's figures and commits from its Delta log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import date

import orjson
import pyarrow as pa
import pytest

from archlab.core.names import raw_topic, table_path
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake.maintenance import MaintenancePolicy, maintain
from archlab.lake.query import lake_tables, table_stats
from archlab.lake.tables import Landed, Tables
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def lab(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archlab.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


async def test_tail_prints_partition_offset_and_values_safely(settings: Settings, fresh_dataset: str) -> None:
    dirty = DirtyRates(non_utf8=0.3, malformed_json=0.3)
    await produce_synthetic(settings, "orders", count=40, rate=0, seed=4, dirty=dirty, topic=raw_topic(fresh_dataset))
    done = await asyncio.to_thread(lab, "tail", raw_topic(fresh_dataset), "--from-beginning", "-n", "40")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count(" key=") == 40
    assert all(f"p{p} @" in out for p in range(4)), out[:500]
    assert '"order_id":' in out  # JSON values are pretty-printed
    assert "base64:" in out  # bytes that are not UTF-8 are shown safely


async def test_tail_of_a_missing_topic_says_so(settings: Settings) -> None:
    done = await asyncio.to_thread(lab, "tail", "nope.raw", "-n", "1")
    assert done.returncode == 2 and "does not exist" in done.stderr


async def test_status_reports_end_offsets_lag_and_lake_rows(
    settings: Settings, fresh_dataset: str, start_service
) -> None:
    raw = raw_topic(fresh_dataset)
    group = f"bronze-{fresh_dataset}"
    tables = Tables.from_settings(settings)
    await produce_synthetic(settings, "orders", count=500, rate=0, seed=6, topic=raw)
    sink = start_service("bronze_sink", LAB_DATASETS=fresh_dataset, LAB_BRONZE_GROUP=group,
                         LAB_FLUSH_INTERVAL_S="0.5")
    await asyncio.to_thread(wait_until, lambda: table_stats(tables, "bronze", fresh_dataset).rows == 500, 60,
                            "bronze")
    await wait_caught_up(settings, group, [raw], timeout_s=60)  # the commit follows the write
    done = await asyncio.to_thread(lab, "status", "--json", LAB_DATASETS=fresh_dataset)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["topics"][raw] == 500
    assert report["consumer_groups"][group][raw] == {"lag": 0, "caught_up": True}
    bronze = report["lake"][table_path("bronze", fresh_dataset)]
    assert bronze["rows"] == 500 and bronze["files"] >= 1 and bronze["bytes"] > 0 and bronze["version"] >= 1
    assert table_path("silver", fresh_dataset) not in report["lake"], "no silver table before a refiner ran"
    assert sink.terminate() == 0


SCHEMA = pa.schema([("offset", pa.int64()), ("dt", pa.date32())])


def _land(tables: Tables, path: str, offsets: range, partition_by: tuple[str, ...] = ("dt",)) -> None:
    table = tables.ensure(path, SCHEMA, partition_by)
    rows = pa.table({"offset": list(offsets), "dt": [date(2024, 1, 1 + o % 2) for o in offsets]}, schema=SCHEMA)
    tables.append(table, rows, [Landed(f"test:{path}", offsets[-1])])


async def test_tables_and_history_read_the_delta_log(settings: Settings) -> None:
    """Every table of a dataset, gold's one per aggregate included, with its figures from the log;
    its history names each commit's operation (appends, then the maintenance that compacted them)."""
    dataset = f"t{uuid.uuid4().hex[:10]}"
    tables = Tables.from_settings(settings)
    silver, gold = table_path("silver", dataset), table_path("gold", dataset, "totals_1h")
    for start in range(0, 60, 20):
        _land(tables, silver, range(start, start + 20))
    _land(tables, gold, range(0, 5), partition_by=())
    assert lake_tables(tables, [dataset]) == [silver, gold]
    files_before = table_stats(tables, "silver", dataset).files
    compacted = maintain(tables, silver, MaintenancePolicy(quiet_s=0, min_files=100, checkpoint_every=100,
                                                           vacuum_retention_h=168, history_retention_h=168,
                                                           target_file_mb=32))
    assert compacted is not None and (compacted.files_before, compacted.files_after) == (files_before, 2)

    done = await asyncio.to_thread(lab, "tables", "--json", LAB_DATASETS=dataset)
    assert done.returncode == 0, done.stderr
    listed = {entry["path"]: entry for entry in orjson.loads(done.stdout)}
    assert list(listed) == [silver, gold]
    stats = tables.stats(silver)
    assert stats is not None
    assert listed[silver] | {"last_commit": None} == {"path": silver, "version": stats.version, "files": 2,
                                                        "rows": 60, "bytes": stats.bytes, "last_commit": None}
    assert listed[silver]["last_commit"] is not None and listed[gold]["rows"] == 5
    shown = await asyncio.to_thread(lab, "tables", LAB_DATASETS=dataset)
    assert shown.returncode == 0 and silver in shown.stdout, shown.stderr

    done = await asyncio.to_thread(lab, "history", silver, "--json")
    assert done.returncode == 0, done.stderr
    commits = orjson.loads(done.stdout)
    operations = [commit["operation"] for commit in commits]
    assert operations[-1] == "CREATE TABLE" and operations.count("WRITE") == 3 and "OPTIMIZE" in operations
    assert [commit["version"] for commit in commits] == list(range(stats.version, -1, -1)), "newest first"
    shown = await asyncio.to_thread(lab, "history", silver, "--limit", "2")
    assert shown.returncode == 0 and "OPTIMIZE" in shown.stdout and "CREATE" not in shown.stdout, shown.stdout


async def test_history_of_a_missing_table_says_so(settings: Settings) -> None:
    done = await asyncio.to_thread(lab, "history", table_path("silver", f"t{uuid.uuid4().hex[:10]}"))
    assert done.returncode == 2 and "lab tables" in done.stderr
