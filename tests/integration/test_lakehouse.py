"""The lake as a lakehouse under maintenance, against the real broker and MinIO: a reader in a tight
loop while the services land, compact and vacuum never errors, doubles or loses a row; a year of
events replayed at full speed ends in a few files per partition that DuckDB counts at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from archlab.contract import Contract, load_contract
from archlab.core import names, sql
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake.maintenance import MaintenancePolicy, maintain
from archlab.lake.query import table_stats
from archlab.lake.tables import Tables
from tests.integration.conftest import wait_until
from tests.integration.test_silver import copy_contract

pytestmark = pytest.mark.integration

LINEAGE = ("_source_partition", "_source_offset")
#: Maintenance as often as the services can run it, so that it races the reader all the time.
EAGER_MAINTENANCE = {"LAB_MAINTENANCE_INTERVAL_S": "1", "LAB_COMPACT_MIN_FILES": "3", "LAB_COMPACT_QUIET_S": "2",
                     "LAB_CHECKPOINT_EVERY": "5", "LAB_VACUUM_RETENTION_H": "1"}


def _env(dataset: str, contracts: Path, **extra: str) -> dict[str, str]:
    return {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(contracts), "LAB_SILVER_GROUP": f"silver-{dataset}",
            "LAB_GOLD_GROUP": f"gold-{dataset}", "LAB_INSTANCE_ID": "test", **extra}


@pytest.fixture
async def orders_like(settings: Settings, tmp_path: Path) -> tuple[Contract, Path]:
    folder = tmp_path / "contracts"
    folder.mkdir()
    name = await copy_contract(settings, folder, "orders")
    return load_contract(folder / f"{name}.yaml"), folder


@dataclass
class Observed:
    """What the reader saw of one table: the last version and key set, and how often it read."""

    version: int = -1
    keys: set[tuple[object, ...]] = field(default_factory=set)
    reads: int = 0


def _keys(rows: pa.Table, columns: tuple[str, ...]) -> list[tuple[object, ...]]:
    return list(zip(*(rows.column(c).to_pylist() for c in columns), strict=True))


def read_once(tables: Tables, path: str, key: tuple[str, ...], seen: Observed) -> None:
    """Read ``path`` twice (through ``Tables`` and through DuckDB, each its own snapshot) and check
    it against what was seen before: versions only grow, no key twice, no key of an earlier version
    missing. Silver's key is a row's lineage, so its rows of one version are a subset of the next;
    gold keeps one current row per key, whose values may change but whose keys only grow."""
    snapshot = tables.open(path)
    if snapshot is None:
        return
    version = snapshot.version()
    keys = _keys(snapshot.to_pyarrow_dataset().to_table(columns=list(key)), key)
    twice = [k for k, n in Counter(keys).items() if n > 1]
    assert not twice, f"{path} v{version}: {len(twice)} keys twice, e.g. {twice[:3]}"
    assert version >= seen.version, f"{path}: version went back from {seen.version} to {version}"
    missing = seen.keys - set(keys)
    assert not missing, f"{path} v{version} lost {len(missing)} rows of v{seen.version}, e.g. {sorted(missing)[:3]}"
    con = sql.connect(threads=None)
    assert tables.register(con, "snapshot", path)
    quoted = ", ".join(sql.quote(c) for c in key)
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({quoted})) FROM snapshot").fetchone()
    assert total == distinct >= len(keys), f"{path} through DuckDB: {total} rows, {distinct} keys, {len(keys)} before"
    seen.version, seen.keys, seen.reads = version, set(keys), seen.reads + 1


async def test_a_reader_in_a_tight_loop_under_landing_and_maintenance_never_errs_doubles_or_loses(
    settings: Settings, tables: Tables, orders_like: tuple[Contract, Path], start_service
) -> None:
    contract, folder = orders_like
    dataset = contract.dataset
    aggregate = contract.aggregates[0]
    silver, gold = names.table_path("silver", dataset), names.table_path("gold", dataset, aggregate.name)
    env = _env(dataset, folder, LAB_FLUSH_INTERVAL_S="0.5", **EAGER_MAINTENANCE)
    refiner = start_service("silver_refiner", **env)
    aggregator = start_service("gold_aggregator", **env)
    producer_stop = asyncio.Event()  # the stream runs until maintenance has compacted both tables a few times
    producing = asyncio.create_task(produce_synthetic(settings, "orders", count=0, rate=300, seed=71, stop=producer_stop,
                                                      dirty=DirtyRates.clean(), topic=names.raw_topic(dataset)))
    seen = {silver: Observed(), gold: Observed()}
    stop = threading.Event()

    def read_in_a_loop() -> None:
        while not stop.is_set():
            read_once(tables, silver, LINEAGE, seen[silver])
            read_once(tables, gold, ("window_start", *aggregate.group_by), seen[gold])

    reader = asyncio.ensure_future(asyncio.to_thread(read_in_a_loop))

    def compactions(path: str, service: object) -> float:
        return service.metric("lab_table_maintenance_total", table=path, operation="compact")  # type: ignore[attr-defined]

    def gold_rewrites() -> int:
        """Merges that replaced files of gold (each flush rewrites the open partition's files it updates)."""
        table = tables.open(gold)
        return 0 if table is None else sum(
            1 for commit in table.history()
            if commit["operation"] == "MERGE" and commit["operationMetrics"].get("num_target_files_removed", 0) > 0)

    def refined() -> int:
        return sum(table_stats(tables, layer, dataset).rows for layer in ("silver", "quarantine"))

    try:
        # Gold is merged, one commit per flush for all partitions: each rewrites the files of the open partition
        # it updates into one, so the partition never gathers the files a compaction waits for. Its reader
        # faces files replaced under it all the same, by the merges.
        await asyncio.to_thread(wait_until, lambda: reader.done() or (
            compactions(silver, refiner) >= 3 and gold_rewrites() >= 3), 240,
            "silver compacted and gold's files rewritten three times each")
        producer_stop.set()
        sent = (await producing).sent
        await asyncio.to_thread(wait_until, lambda: reader.done() or refined() == sent, 120,
                                f"{sent} rows in silver ∪ quarantine")
    finally:
        producer_stop.set()
        stop.set()
        await reader  # raises what the reader found
    vacuums = refiner.metric("lab_table_maintenance_total", table=silver, operation="vacuum")
    print(f"reader: {seen[silver].reads} reads of silver up to v{seen[silver].version}, {seen[gold].reads} of gold "
          f"up to v{seen[gold].version}; silver compactions {compactions(silver, refiner):.0f}, vacuum passes "
          f"{vacuums:.0f}; gold compactions {compactions(gold, aggregator):.0f}, rewrites {gold_rewrites()}")
    assert seen[silver].reads >= 10 and vacuums >= 3
    assert refiner.terminate() == 0 and aggregator.terminate() == 0, refiner.log_tail() + aggregator.log_tail()


async def test_a_year_replayed_at_full_speed_ends_in_few_files_per_partition(
    settings: Settings, tables: Tables, orders_like: tuple[Contract, Path], start_service
) -> None:
    contract, folder = orders_like
    dataset = contract.dataset
    count = 30_000
    await produce_synthetic(settings, "orders", count=count, rate=0, seed=72, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(dataset), history=timedelta(days=365))
    env = _env(dataset, folder, LAB_MAINTENANCE_INTERVAL_S="3600")  # the test runs maintenance itself, below
    refiner = start_service("silver_refiner", **env)
    aggregator = start_service("gold_aggregator", **env)

    def refined() -> int:
        return sum(table_stats(tables, layer, dataset).rows for layer in ("silver", "quarantine"))

    await asyncio.to_thread(wait_until, lambda: refined() == count, 300, f"{count} rows in silver ∪ quarantine")
    gold_group = f"gold-{dataset}"
    for group, topic in ((names.group(gold_group, "shuffle"), names.silver_topic(dataset)),
                         (gold_group, names.gold_shuffle_topic(dataset)),
                         (names.group(gold_group, "gold", "lake"), names.gold_topic(dataset))):
        await wait_caught_up(settings, group, [topic], timeout_s=600)  # each stage has all its input by now

    paths = [names.table_path("silver", dataset)] + [names.table_path("gold", dataset, a.name) for a in contract.aggregates]
    before = {path: tables.files_per_partition(path) for path in paths}
    policy = MaintenancePolicy.from_settings(settings.model_copy(update={"compact_quiet_s": 0}))  # closed days now
    started = time.monotonic()
    for path in paths:
        await asyncio.to_thread(maintain, tables, path, policy)
    maintenance_s = time.monotonic() - started
    after = {path: tables.files_per_partition(path) for path in paths}
    for path in paths:
        print(f"{path}: {len(before[path])} partitions, files {sum(before[path].values())} -> {sum(after[path].values())}"
              f" (most per partition {max(before[path].values())} -> {max(after[path].values())})")
        assert max(after[path].values()) <= 2, f"{path}: {after[path].most_common(3)}"
    assert len(after[paths[0]]) >= 300, "a year of event dates: one partition per day"

    con = sql.connect(threads=None)
    started = time.monotonic()
    assert tables.register(con, "silver", paths[0])
    (rows,) = con.execute("SELECT count(*) FROM silver").fetchone()
    count_s = time.monotonic() - started
    print(f"maintenance of {len(paths)} tables: {maintenance_s:.1f} s; count(*) over silver: {rows} rows in {count_s:.3f} s")
    assert rows == table_stats(tables, "silver", dataset).rows == count - table_stats(tables, "quarantine", dataset).rows
    assert refiner.terminate() == 0 and aggregator.terminate() == 0, refiner.log_tail() + aggregator.log_tail()
