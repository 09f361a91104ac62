"""Table maintenance on local Delta tables: what is compacted and when, what a reader keeps, and a
loop that survives conflicts and failures."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError
from prometheus_client import REGISTRY

from archlab.core.settings import Settings
from archlab.lake import maintenance
from archlab.lake.maintenance import MaintenancePolicy, maintain, maintain_forever
from archlab.lake.store import Lake
from archlab.lake.tables import Landed, Tables

SCHEMA = pa.schema([("offset", pa.int64()), ("dt", pa.date32())])
POLICY = MaintenancePolicy(quiet_s=60, min_files=5, checkpoint_every=10, vacuum_retention_h=168,
                           history_retention_h=168, target_file_mb=32)
LATER_MS = (time.time() + 3600) * 1000  # an hour from now: every partition written so far is closed


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Lake.local(tmp_path), None)


def append(tables: Tables, path: str, offsets: range, day: date, partition_by: tuple[str, ...] = ("dt",)) -> None:
    table = tables.ensure(path, SCHEMA, partition_by)
    data = pa.table({"offset": list(offsets), "dt": [day] * len(offsets)}, schema=SCHEMA)
    tables.append(table, data, [Landed(f"test:{path}:{day}", offsets[-1])])


def files_per_partition(tables: Tables, path: str) -> dict[str, int]:
    table = tables.open(path)
    assert table is not None
    actions = pa.table(table.get_add_actions(flatten=True))
    if "partition.dt" not in actions.column_names:
        return {"(unpartitioned)": actions.num_rows}
    days = actions.column("partition.dt").to_pylist()
    return {str(day): days.count(day) for day in set(days)}


def offsets(tables: Tables, path: str, as_of: int | None = None) -> list[int]:
    data = tables.read(path, ["offset"], as_of)
    assert data is not None
    return sorted(data.column("offset").to_pylist())


def metric(table: str, operation: str) -> float:
    return REGISTRY.get_sample_value("lab_table_maintenance_total", {"table": table, "operation": operation}) or 0.0


def test_closed_partitions_become_one_file_and_open_ones_wait_for_enough_files(tables: Tables) -> None:
    path = "silver/closed"
    for start in range(0, 30, 10):  # three flushes into each of two days
        append(tables, path, range(start, start + 10), date(2024, 1, 1))
        append(tables, path, range(1000 + start, 1010 + start), date(2024, 1, 2))
    assert files_per_partition(tables, path) == {"2024-01-01": 3, "2024-01-02": 3}
    before = offsets(tables, path)

    just_written = maintain(tables, path, POLICY)  # both days written just now: open, below min_files
    assert just_written is not None and just_written.compacted_partitions == 0
    assert files_per_partition(tables, path) == {"2024-01-01": 3, "2024-01-02": 3}

    report = maintain(tables, path, POLICY, now_ms=LATER_MS)
    assert report is not None and (report.files_before, report.files_after) == (6, 2)
    assert files_per_partition(tables, path) == {"2024-01-01": 1, "2024-01-02": 1}
    assert offsets(tables, path) == before, "compaction changes files, never rows"
    assert metric(path, "compact") == 1 and metric(path, "vacuum") == 2


def test_a_file_of_the_target_size_is_never_read_and_rewritten_again(tables: Tables) -> None:
    """LAB_TARGET_FILE_MB (delta.targetFileSize): compaction merges the small files beside a large one and
    leaves the large one alone, so a busy partition's compaction does not hold all of it in memory."""
    path, day = "bronze/busy", date(2024, 1, 1)
    policy = dataclasses.replace(POLICY, target_file_mb=1)
    table = tables.ensure(path, SCHEMA, ("dt",))
    noise = random.Random(3)
    rows = 200_000  # random int64s: ~1.6 MB that no encoding shrinks, above the 1 MiB target
    tables.append(table, pa.table({"offset": [noise.getrandbits(62) for _ in range(rows)], "dt": [day] * rows},
                                  schema=SCHEMA), [Landed("test:big", 1)])
    (large,) = tables.open(path).file_uris()
    for start in range(0, 50, 10):
        append(tables, path, range(start, start + 10), day)
    before = offsets(tables, path)

    report = maintain(tables, path, policy, now_ms=LATER_MS)
    assert report is not None and (report.files_before, report.files_after) == (6, 2)
    assert large in tables.open(path).file_uris()
    assert offsets(tables, path) == before


def test_an_open_partition_or_unpartitioned_table_is_compacted_at_min_files(tables: Tables) -> None:
    partitioned, flat = "silver/open", "gold/flat/totals"
    for start in range(0, POLICY.min_files * 10, 10):
        append(tables, partitioned, range(start, start + 10), date(2024, 1, 1))
        append(tables, flat, range(start, start + 10), date(2024, 1, 1), partition_by=())
    maintain(tables, partitioned, POLICY)
    maintain(tables, flat, POLICY)
    assert files_per_partition(tables, partitioned) == {"2024-01-01": 1}
    assert files_per_partition(tables, flat) == {"(unpartitioned)": 1}
    assert offsets(tables, flat) == list(range(POLICY.min_files * 10))


def test_a_reader_keeps_its_snapshot_through_compaction_and_vacuum(tables: Tables) -> None:
    """Compaction removes files from the *next* version only, and vacuum deletes them only after the
    retention: a reader holding an older snapshot reads all its rows."""
    path = "silver/reader"
    for start in range(0, 40, 10):
        append(tables, path, range(start, start + 10), date(2024, 1, 1))
    snapshot = tables.open(path)
    assert snapshot is not None
    maintain(tables, path, POLICY, now_ms=LATER_MS)
    assert files_per_partition(tables, path) == {"2024-01-01": 1}
    assert sorted(snapshot.to_pyarrow_dataset().to_table().column("offset").to_pylist()) == list(range(40))
    assert offsets(tables, path, as_of=snapshot.version()) == list(range(40)), "time travel too"


def test_vacuum_deletes_removed_files_after_the_retention_and_checkpoints(tables: Tables, tmp_path: Path) -> None:
    path = "silver/vacuum"
    for start in range(0, 40, 10):
        append(tables, path, range(start, start + 10), date(2024, 1, 1))
    folder = tmp_path / path / "dt=2024-01-01"
    assert len(list(folder.glob("*.parquet"))) == 4
    report = maintain(tables, path, MaintenancePolicy(60, 5, 1000, vacuum_retention_h=0, history_retention_h=24, target_file_mb=32),
                      now_ms=LATER_MS)
    assert report is not None and report.files_after == 1 and report.vacuumed_files == 4 and report.checkpoint
    assert len(list(folder.glob("*.parquet"))) == 1
    table = tables.open(path)
    assert table is not None
    assert table.metadata().configuration == {"delta.logRetentionDuration": "interval 1 days",
                                              "delta.deletedFileRetentionDuration": "interval 0 hours",
                                              "delta.checkpointInterval": "1000",
                                              "delta.targetFileSize": str(32 * 1024 * 1024)}
    assert maintenance._last_checkpoint(tables, path) == table.version()
    assert offsets(tables, path) == list(range(40))


def test_a_checkpoint_every_so_many_versions(tables: Tables) -> None:
    """The pass sets ``delta.checkpointInterval`` to ``checkpoint_every``, so the table's writers checkpoint
    as they commit: an exactly-once check then replays a few commits, not the whole log since creation."""
    path = "silver/checkpoints"
    append(tables, path, range(0, 10), date(2024, 1, 1))
    policy = MaintenancePolicy(60, 1000, checkpoint_every=5, vacuum_retention_h=168, history_retention_h=168,
                               target_file_mb=32)
    maintain(tables, path, policy)
    assert maintenance._last_checkpoint(tables, path) == -1  # versions 0-2: too few
    for start in range(10, 130, 10):
        append(tables, path, range(start, start + 10), date(2024, 1, 1))
    maintain(tables, path, policy)
    table = tables.open(path)
    assert table is not None and table.metadata().configuration["delta.checkpointInterval"] == "5"
    assert 0 <= table.version() - maintenance._last_checkpoint(tables, path) < 5
    assert metric(path, "properties") == 1


async def test_the_loop_retries_conflicts_survives_failures_and_stops(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflict is retried at once (with backoff), any other error waits for the next pass; both
    leave the service running, and a set ``stop`` ends the loop."""
    calls: list[str] = []
    outcomes = iter([CommitFailedError("conflict"), OSError("S3 down"), None])

    def flaky(_tables: Tables, path: str, _policy: MaintenancePolicy) -> None:
        calls.append(path)
        outcome = next(outcomes, None)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(maintenance, "maintain", flaky)
    settings = Settings(s3_access_key="k", s3_secret_key="s", maintenance_interval_s=0.05)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.create_task(maintain_forever(tables, ["silver/a"], settings, stop))
    deadline = time.monotonic() + 10
    while len(calls) < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert calls[:4] == ["silver/a"] * 4  # conflict → retried; OS error → next pass; then passes go on
    stop.set()
    await asyncio.wait_for(loop, 5)


async def test_maintenance_alongside_a_writer_loses_and_doubles_nothing(tables: Tables) -> None:
    """The real loop compacting (min_files 2) while a writer appends: every offset once, files stay few."""
    path = "silver/concurrent"
    append(tables, path, range(0, 1), date(2024, 1, 1))
    settings = Settings(s3_access_key="k", s3_secret_key="s", maintenance_interval_s=0.05,  # type: ignore[arg-type]
                        compact_min_files=2)
    stop = asyncio.Event()
    loop = asyncio.create_task(maintain_forever(tables, [path], settings, stop))

    def write() -> None:
        for start in range(1, 200, 5):
            append(tables, path, range(start, start + 5), date(2024, 1, 1))

    await asyncio.to_thread(write)
    deadline = time.monotonic() + 20
    while files_per_partition(tables, path)["2024-01-01"] > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, 10)
    assert offsets(tables, path) == list(range(201))
    assert files_per_partition(tables, path) == {"2024-01-01": 1}
    assert metric(path, "compact") >= 1
