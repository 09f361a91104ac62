"""A year of orders replayed at full speed: files per partition of silver and gold as landed and after
one maintenance pass, and how long ``count(*)`` over silver takes a reader (cold: a fresh process's
first query; warm: the same reader again).

    .venv/bin/python -m bench year --events 340000

The events' times spread evenly over the 365 days up to now (``lab produce --history``), the silver
refiner and gold aggregator run as processes, maintenance then runs once with no quiet period.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from archlab.contract import load_contract
from archlab.core import names, sql
from archlab.core.settings import Settings
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake.maintenance import MaintenancePolicy, maintain
from archlab.lake.tables import Tables
from archlab.testing.processes import ServiceProcess
from bench.common import copy_contract, fresh_dataset, report, stack_env, throwaway_stack

COUNT_QUERY = "SELECT count(*) FROM silver"


def time_count(tables: Tables, path: str) -> tuple[int, float]:
    """(rows, seconds) of ``count(*)`` over the table through the project's one reader."""
    started = time.perf_counter()
    con = sql.connect(threads=None)
    assert tables.register(con, "silver", path)
    (rows,) = con.execute(COUNT_QUERY).fetchone()
    return rows, time.perf_counter() - started


def cold_count(settings: Settings, path: str) -> float:
    """``time_count`` in a fresh interpreter: no warm connection, no cached metadata."""
    probe = (
        "import sys; from archlab.core.settings import Settings; from archlab.lake.tables import Tables; "
        "from bench.year import time_count; "
        "print(time_count(Tables.from_settings(Settings()), sys.argv[1])[1])"
    )
    env = stack_env(settings, LAB_ENV_FILE="")
    done = subprocess.run([sys.executable, "-c", probe, path], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


async def measure(events: int) -> dict[str, object]:
    with throwaway_stack("year") as (_, settings), tempfile.TemporaryDirectory(prefix="lab-bench-year-") as folder:
        dataset = await fresh_dataset(settings)
        contracts = copy_contract(Path(folder) / "contracts", dataset)
        contract = load_contract(contracts / f"{dataset}.yaml")
        started = time.perf_counter()
        await produce_synthetic(settings, "orders", count=events, rate=0, seed=72, topic=names.raw_topic(dataset),
                                history=timedelta(days=365))
        produce_s = time.perf_counter() - started
        env = stack_env(settings, LAB_DATASETS=dataset, LAB_CONTRACTS_DIR=str(contracts), LAB_INSTANCE_ID="bench",
                        LAB_SILVER_GROUP=f"silver-{dataset}", LAB_GOLD_GROUP=f"gold-{dataset}",
                        LAB_MAINTENANCE_INTERVAL_S="86400", LAB_LOG_LEVEL="WARNING")
        services = [ServiceProcess(name, env, Path(folder) / f"{name}.log") for name in ("silver_refiner", "gold_aggregator")]
        try:
            gold = f"gold-{dataset}"
            for group, topic in ((f"silver-{dataset}", names.raw_topic(dataset)),
                                 (names.group(gold, "shuffle"), names.silver_topic(dataset)),
                                 (gold, names.gold_shuffle_topic(dataset)),
                                 (names.group(f"silver-{dataset}", "silver", "lake"), names.silver_topic(dataset)),
                                 (names.group(gold, "gold", "lake"), names.gold_topic(dataset))):
                await wait_caught_up(settings, group, [topic], timeout_s=1800)
            landed_s = time.perf_counter() - started - produce_s
        finally:
            for service in services:
                service.terminate()
        tables = Tables.from_settings(settings)
        silver = names.table_path("silver", dataset)
        paths = [silver] + [names.table_path("gold", dataset, a.name) for a in contract.aggregates]
        before = {path: tables.files_per_partition(path) for path in paths}
        policy = MaintenancePolicy.from_settings(settings.model_copy(update={"compact_quiet_s": 0}))  # closed days now
        started = time.perf_counter()
        for path in paths:
            await asyncio.to_thread(maintain, tables, path, policy)
        maintenance_s = time.perf_counter() - started
        after = {path: tables.files_per_partition(path) for path in paths}
        cold_s = await asyncio.to_thread(cold_count, settings, silver)
        rows, warm_s = time_count(tables, silver)
        rows, warm_s = time_count(tables, silver)
        result: dict[str, object] = {
            "events": events, "produce_s": round(produce_s, 1), "refine_and_aggregate_s": round(landed_s, 1),
            "silver_rows": rows, "silver_partitions": len(after[silver]),
            "count_star_cold_s": round(cold_s, 3), "count_star_warm_s": round(warm_s, 3),
            "maintenance_s": round(maintenance_s, 1),
        }
        for path in paths:
            label = "silver" if path == silver else path.rsplit("/", 1)[-1]
            result[f"{label}_files_landed"] = sum(before[path].values())
            result[f"{label}_files_after"] = sum(after[path].values())
            result[f"{label}_most_files_per_partition_after"] = max(after[path].values())
        return result


def main(events: int = 340_000) -> None:
    report("year", "A year of orders replayed: files and count(*)", asyncio.run(measure(events)))
