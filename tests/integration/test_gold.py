"""gold_aggregator against the real broker and MinIO: each gold table holds one current row per window
and group, equal to one DuckDB query over silver, live, across kill -9 and a rebalance, and for a past
year's file replayed at full speed (then compacted by the tables' maintenance)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates, make_generator
from archlab.ingest.produce import produce_synthetic
from archlab.lake.tables import Tables
from archlab.testing.verify import gold_topic_differences, wait_gold_equals_truth
from tests.integration.conftest import ServiceProcess, kill9_repeatedly, read_all, wait_until
from tests.integration.test_silver import copy_contract

pytestmark = pytest.mark.integration

#: Dirty kinds a JSON Lines file can carry (no malformed lines or raw bytes), and no late events.
KEEPS_JSON_LINES = DirtyRates.clean().model_copy(update={"duplicate": 0.02, "out_of_range": 0.01, "unknown_enum": 0.01,
                                                          "missing_field": 0.01})


@pytest.fixture
async def gold_dataset(settings: Settings, tmp_path: Path) -> tuple[str, Path]:
    """A copy of the orders contract with a 7-hour grace period, so that every late event the
    producer injects (up to 6 hours behind) is still on time for its windows."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    name = await copy_contract(settings, folder, "orders")
    path = folder / f"{name}.yaml"
    path.write_text(path.read_text().replace("grace: 10m", "grace: 7h"))
    return name, folder


def _env(dataset: str, contracts: Path, instance: str = "test") -> dict[str, str]:
    return {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(contracts), "LAB_SILVER_GROUP": f"silver-{dataset}",
            "LAB_GOLD_GROUP": f"gold-{dataset}", "LAB_INSTANCE_ID": instance, "LAB_FLUSH_INTERVAL_S": "0.5",
            "LAB_MAINTENANCE_INTERVAL_S": "1", "LAB_COMPACT_QUIET_S": "2"}


async def settle(tables: Tables, dataset: str, contracts: Path, timeout: float) -> list[str]:
    """Poll until gold on the lake equals the truth over silver (or time out); the last differences."""
    return await wait_gold_equals_truth(tables, load_contract(contracts / f"{dataset}.yaml"), timeout)


@dataclass(frozen=True)
class Restored:
    """What one gold_aggregator instance restored when it was given shuffle partitions (its metrics)."""

    windows: float
    from_checkpoint: float  # partitions restored from the local checkpoint plus the changelog's tail

    @classmethod
    def read(cls, instance: ServiceProcess, dataset: str) -> Restored:
        return cls(instance.metric("lab_gold_windows_restored_total", dataset=dataset),
                   instance.metric("lab_gold_restores_total", dataset=dataset, source="checkpoint"))


async def topic_differences(settings: Settings, tables: Tables, dataset: str, contracts: Path) -> list[str]:
    """The compacted gold topic (latest record per key) against the truth over silver."""
    return await gold_topic_differences(settings, tables, load_contract(contracts / f"{dataset}.yaml"))


async def test_gold_equals_a_batch_recomputation_over_silver(
    settings: Settings, tables: Tables, gold_dataset: tuple[str, Path], start_service
) -> None:
    dataset, contracts = gold_dataset
    summary = await produce_synthetic(settings, "orders", count=20_000, rate=0, seed=31, topic=names.raw_topic(dataset))
    assert summary.sent == 20_000
    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    gold = start_service("gold_aggregator", **_env(dataset, contracts))
    problems = await settle(tables, dataset, contracts, 180)
    assert problems == [], "\n".join(problems[:20]) + "\n" + gold.log_tail()
    assert await topic_differences(settings, tables, dataset, contracts) == []
    assert gold.terminate() == 0 and refiner.terminate() == 0, gold.log_tail()


async def test_gold_stays_exact_through_kill9_and_a_rebalance(
    settings: Settings, tables: Tables, gold_dataset: tuple[str, Path], start_service
) -> None:
    dataset, contracts = gold_dataset
    producing = asyncio.create_task(
        produce_synthetic(settings, "orders", count=60_000, rate=1_000, seed=41, topic=names.raw_topic(dataset))
    )
    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    restored: list[Restored] = []  # one per gold instance, read just before its kill (and the last one's at the end)

    def start_gold() -> ServiceProcess:
        return start_service("gold_aggregator", **_env(dataset, contracts))

    gold = await kill9_repeatedly(start_gold, times=5, seed=43, topic_pattern=r"\.gold-shuffle", pause=(2.0, 5.0),
                                  before_kill=lambda instance: restored.append(Restored.read(instance, dataset)))
    second = start_service("gold_aggregator", **_env(dataset, contracts, instance="second"))
    await second.working(topic_pattern=r"\.gold-shuffle")
    await asyncio.sleep(2)
    assert second.terminate() == 0, second.log_tail()
    assert (await producing).sent == 60_000
    problems = await settle(tables, dataset, contracts, 240)
    assert problems == [], "\n".join(problems[:20]) + "\n" + gold.log_tail()
    assert await topic_differences(settings, tables, dataset, contracts) == []
    await gold.working(topic_pattern=r"\.gold-shuffle")
    restored.append(Restored.read(gold, dataset))
    assert sum(instance.windows > 0 for instance in restored) >= 3, f"kills did not hit work: {restored}"
    assert any(instance.from_checkpoint > 0 for instance in restored), f"no restart used its checkpoint: {restored}"
    assert gold.terminate() == 0 and refiner.terminate() == 0, gold.log_tail()


async def test_a_past_year_replayed_at_full_speed_closes_its_windows_and_compacts(
    settings: Settings, tables: Tables, tmp_path: Path, start_service
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")  # default grace: 10 minutes
    generator = make_generator("orders", seed=51, start=datetime(2024, 2, 28, 21, 0, tzinfo=UTC),
                               events_per_second=2.0, dirty=KEEPS_JSON_LINES)
    history = tmp_path / "orders-2024.jsonl"
    history.write_bytes(b"\n".join(r.value for r in generator.batch(20_000)))  # 21:00 to about 22:52
    replay = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "archlab.cli.main", "replay", str(history), "--dataset", dataset],
        capture_output=True, text=True, env={**os.environ, "LAB_CONTRACTS_DIR": str(folder)},
    )
    assert replay.returncode == 0, replay.stderr
    refiner = start_service("silver_refiner", **_env(dataset, folder))
    gold = start_service("gold_aggregator", **_env(dataset, folder))
    problems = await settle(tables, dataset, folder, 240)
    if problems:
        late = [orjson.loads(r.value) for r in await read_all(settings, names.dq_topic(dataset))]
        late = [(r["rule"], r["failed"]) for r in late if r["rule"].startswith("late") and r["failed"]]
        topic = await topic_differences(settings, tables, dataset, folder)
        raise AssertionError(f"{len(problems)} differences (the topic has {len(topic)}), late counts {late}\n"
                             + "\n".join(problems[:20]))

    closed_before = datetime(2024, 2, 28, 22, 40, tzinfo=UTC)  # the watermark (about 22:51) less the grace
    for aggregate in ("by_category_1m", "by_country_1m", "totals_1h"):
        path = names.table_path("gold", dataset, aggregate)

        def closed_and_compacted(path: str = path) -> bool:
            """The windows the watermark closed read final (the table has one row per key: no revision
            logic), and maintenance compacted the quiet partition (dt=2024-02-28) into few files."""
            rows = tables.read(path).to_pylist()
            return (bool(rows) and all(row["final"] for row in rows if row["window_end"] <= closed_before)
                    and max(files_per_partition(tables, path).values()) <= 2)

        wait_until(closed_and_compacted, 90, f"{path}: closed windows final, partition compacted")
    open_hour = [row for row in tables.read(names.table_path("gold", dataset, "totals_1h")).to_pylist()
                 if row["window_start"] == datetime(2024, 2, 28, 22, tzinfo=UTC)]
    assert [row["final"] for row in open_hour] == [False]
    assert gold.terminate() == 0 and refiner.terminate() == 0, gold.log_tail()


def files_per_partition(tables: Tables, path: str) -> dict[str, int]:
    """Data files of each date partition of a table's latest version, from its log."""
    table = tables.open(path)
    assert table is not None, f"no table {path}"
    days = pa.table(table.get_add_actions(flatten=True)).column(f"partition.{names.DATE_PARTITION}").to_pylist()
    return {str(day): days.count(day) for day in set(days)}
