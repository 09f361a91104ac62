"""``python -m bench backfill [--events N]``: how fast ``lab backfill`` rebuilds a range on each engine.

Generated orders (every dirty kind) are written straight into a bronze table on a throw-away MinIO, as
bronze_sink lands them (4 Kafka partitions, arrival a second after the event); then the same range, all of
it, is rebuilt and replaced by DuckDB, by Spark from a cold start (the session's start measured on its own),
and by Spark again in the warm session. Rows/s counts bronze rows read and refined per second of rebuild
(the commits are the same delta-rs writes for both engines and are reported apart).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from archlab.batch.backfill import backfill
from archlab.batch.span import Span
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators import DirtyRates, make_generator
from archlab.lake.spark import SparkSettings
from archlab.lake.store import calendar_date
from archlab.lake.tables import Landed, Tables
from archlab.pipeline.bronze import BRONZE_SCHEMA
from bench.common import report, throwaway_stack

PARTITIONS = 4
START = datetime(2026, 1, 5, tzinfo=UTC)


def _bronze(dataset: str, events: int) -> pa.Table:
    generator = make_generator("orders", seed=5, start=START, events_per_second=events / timedelta(days=1).total_seconds(),
                               dirty=DirtyRates(), contracts_dir=PROJECT_ROOT / "contracts")
    records = generator.batch(events)
    stamps = pa.array([r.event_time_ms + 1_000 for r in records], pa.timestamp("ms", tz="UTC"))
    count = len(records)
    return pa.Table.from_arrays([
        pa.repeat(pa.scalar(names.raw_topic(dataset)), count),
        pa.array([i % PARTITIONS for i in range(count)], pa.int32()),
        pa.array([i // PARTITIONS for i in range(count)], pa.int64()),
        pa.array([r.key for r in records], pa.binary()),
        pa.array([r.value for r in records], pa.binary()),
        pa.nulls(count, BRONZE_SCHEMA.field("headers").type),
        stamps,
        pa.repeat(pa.scalar(0, pa.int8()), count),
        stamps,
        calendar_date(stamps),
    ], schema=BRONZE_SCHEMA)


def main(events: int = 200_000) -> None:
    with throwaway_stack("backfill") as (_stack, settings), tempfile.TemporaryDirectory() as folder:
        contracts = Path(folder)
        dataset = f"bench{os.getpid()}"
        shutil.copytree(PROJECT_ROOT / "contracts" / "reference", contracts / "reference")
        text = (PROJECT_ROOT / "contracts" / "orders.yaml").read_text()
        (contracts / f"{dataset}.yaml").write_text(text.replace("dataset: orders", f"dataset: {dataset}", 1))
        tables = Tables.from_settings(settings)
        path = names.table_path("bronze", dataset)
        bronze = tables.ensure(path, BRONZE_SCHEMA, (names.DATE_PARTITION,))
        tables.append(bronze, _bronze(dataset, events), [Landed("bench", 0)])
        spark_settings = SparkSettings(**{name: getattr(settings, name) for name in type(settings).model_fields
                                          if name in SparkSettings.model_fields})
        span = Span(int(START.timestamp() * 1000), int((START + timedelta(days=2)).timestamp() * 1000))
        runs = {}
        for label, engine in (("duckdb", "duckdb"), ("spark_cold", "spark"), ("spark_warm", "spark")):
            started = time.perf_counter()
            runs[label] = backfill(spark_settings, contracts, dataset, span, engine)  # type: ignore[arg-type]
            runs[label].commit_s = round(runs[label].commit_s, 2)
            print(f"{label}: {time.perf_counter() - started:.1f} s in all")
        result: dict[str, object] = {"bronze_rows": events}
        for label, run in runs.items():
            result[f"{label}_rebuild_s"] = round(run.rebuild_s, 2)
            result[f"{label}_rows_per_s"] = round(run.rows_per_s)
            result[f"{label}_commit_s"] = run.commit_s
        result["spark_session_start_s"] = round(runs["spark_cold"].startup_s, 1)
        result["silver_rows"] = next(r.rows for r in runs["duckdb"].replaced if r.path.startswith("silver"))
        report("backfill", "lab backfill: DuckDB and Spark over the same range", result)
