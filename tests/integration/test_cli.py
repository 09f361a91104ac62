"""The `lab` command against the real stack: tail shows records safely, status adds up and reads
only Parquet footers."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archlab.core.names import LAYERS, raw_topic, table_path
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake import query
from archlab.lake.query import table_stats
from archlab.lake.store import Lake
from tests.integration.conftest import bronze_rows, wait_until

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
    settings: Settings, lake: Lake, fresh_dataset: str, start_service
) -> None:
    raw = raw_topic(fresh_dataset)
    group = f"bronze-{fresh_dataset}"
    await produce_synthetic(settings, "orders", count=500, rate=0, seed=6, topic=raw)
    sink = start_service("bronze_sink", LAB_DATASETS=fresh_dataset, LAB_BRONZE_GROUP=group,
                         LAB_FLUSH_INTERVAL_S="0.5")
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(lake, fresh_dataset)) == 500, 60, "bronze")
    await wait_caught_up(settings, group, [raw], timeout_s=60)  # the commit follows the write
    done = await asyncio.to_thread(lab, "status", "--json", LAB_DATASETS=fresh_dataset)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["topics"][raw] == 500
    assert report["consumer_groups"][group][raw] == {"lag": 0, "caught_up": True}
    assert set(report["lake"]) == {table_path(layer, fresh_dataset) for layer in LAYERS}  # dq included
    bronze = report["lake"][table_path("bronze", fresh_dataset)]
    assert bronze["rows"] == 500 and bronze["rows_exact"] and bronze["objects"] >= 1 and bronze["bytes"] > 0
    assert report["lake"][table_path("silver", fresh_dataset)] == {"objects": 0, "bytes": 0, "rows": 0,
                                                                       "rows_exact": True}
    assert sink.terminate() == 0


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="none", row_group_size=500)
    return buffer.getvalue()


def test_table_stats_reads_only_the_footers(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows come from each object's tail: no object is read whole, and a footer larger than the
    first tail read costs exactly one more read of the footer."""
    dataset = f"t{uuid.uuid4().hex[:10]}"
    folder = table_path("bronze", dataset)
    narrow = [pa.table({"id": pa.array(range(n)), "blob": pa.array([os.urandom(400) for _ in range(n)])})
              for n in (1_000, 2_000, 3_000)]  # incompressible: each object is far bigger than its tail read
    wide = pa.table({f"column_{i:04d}": pa.array([i] * 600) for i in range(1_500)})  # footer > one tail read
    objects = {f"{folder}/dt=2024-01-0{i + 1}/hour=00/part.parquet": _parquet(t) for i, t in enumerate(narrow)}
    objects[f"{folder}/dt=2024-01-09/hour=00/wide.parquet"] = _parquet(wide)
    objects[f"{folder}/dt=2024-01-09/hour=00/notes.txt"] = b"not a Parquet object"
    for key, data in objects.items():
        lake.write_bytes(key, data)
    footer_sizes = {lake.path(k): int.from_bytes(d[-8:-4], "little") + 8 for k, d in objects.items() if k.endswith(".parquet")}
    assert footer_sizes[lake.path(f"{folder}/dt=2024-01-09/hour=00/wide.parquet")] > query.FOOTER_TAIL_BYTES

    reads: list[tuple[str, Any, Any]] = []
    original = lake.fs._cat_file

    async def recording_cat_file(path: str, *args: Any, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
        reads.append((lake.fs._strip_protocol(path), start, end))
        return await original(path, *args, start=start, end=end, **kwargs)

    monkeypatch.setattr(lake.fs, "_cat_file", recording_cat_file)
    stats = table_stats(lake, "bronze", dataset)

    parquet = {k: d for k, d in objects.items() if k.endswith(".parquet")}
    assert (stats.objects, stats.rows) == (4, 6_000 + 600)
    assert stats.bytes == sum(len(d) for d in parquet.values())
    sizes = {lake.path(k): len(d) for k, d in parquet.items()}
    assert {path for path, _, _ in reads} == set(sizes), "every Parquet object, and nothing else, is read"
    for path, start, end in reads:
        assert end == sizes[path] and start > 0, f"{path} read from {start} to {end} of {sizes[path]} bytes"
        assert end - start in (query.FOOTER_TAIL_BYTES, footer_sizes[path]), (path, start, end)
    assert len(reads) == len(sizes) + 1, "one read per object, one more for the wide footer"


def test_table_stats_past_its_deadline_estimates_the_rest_from_bytes(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lake of any size answers in bounded time: after the deadline no more footers are read, and
    the unread objects' rows are estimated at the rows per byte of those read (flagged inexact)."""
    dataset = f"t{uuid.uuid4().hex[:10]}"
    data = _parquet(pa.table({"id": pa.array(range(700)), "blob": pa.array([b"x" * 50] * 700)}))
    for hour in range(6):
        lake.write_bytes(f"{table_path('silver', dataset)}/dt=2024-01-01/hour={hour:02d}/part.parquet", data)
    monkeypatch.setattr(query, "CONCURRENT_READS", 2)
    reads: list[str] = []
    original = lake.fs._cat_file

    async def recording_cat_file(path: str, *args: Any, **kwargs: Any) -> bytes:
        reads.append(path)
        return await original(path, *args, **kwargs)

    monkeypatch.setattr(lake.fs, "_cat_file", recording_cat_file)
    late = table_stats(lake, "silver", dataset, deadline=0.0)  # long past: one batch only
    assert len(reads) == 2
    assert late == query.TableStats(objects=6, bytes=6 * len(data), rows=6 * 700, rows_exact=False)
    reads.clear()
    assert table_stats(lake, "silver", dataset) == query.TableStats(6, 6 * len(data), 6 * 700, True)
    assert len(reads) == 6
