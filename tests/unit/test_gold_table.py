"""Gold as current-value Delta tables on a local folder: one table per aggregate with its own columns,
one row per window and group holding the latest revision, history through time travel, and merges
that rewrite only the days they touch."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT
from archlab.lake.store import Lake
from archlab.lake.tables import Landed, Tables
from archlab.pipeline.gold.tables import GoldEncoder

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
TOPIC = names.gold_topic("orders")


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Lake.local(tmp_path), None)


def update(aggregate: str, start: str, category: str | None, units: int, revision: int, final: bool = False) -> bytes:
    """A gold topic value of ``aggregate`` for the window starting at ``start`` (ISO, minute windows)."""
    row = {"aggregate": aggregate, "window_start": start, "window_end": start.replace(":00.000Z", ":59.999Z"),
           "units": units, "events": units, "late_events": 0, "final": final, "revision": revision,
           "watermark": None}
    if aggregate == "by_category_1m":
        row["category"] = category
    return orjson.dumps(row)


def records(*values: bytes, first_offset: int = 0) -> list[ConsumerRecord]:
    return [ConsumerRecord(TOPIC, 0, first_offset + i, 0, 0, b"k", value, None, 1, len(value), [])
            for i, value in enumerate(values)]


def land(tables: Tables, encoder: GoldEncoder, batch: list[ConsumerRecord]) -> None:
    """What the lake sink does with one flush of gold records: one merge per aggregate table."""
    rows = encoder.encode(batch)
    for target in encoder.targets("orders"):
        table = tables.ensure(target.path, target.schema, target.partition_by)
        if target.path in rows:
            tables.merge(table, rows[target.path], target.merge_keys, [Landed("gold:0", batch[-1].offset)],
                         target.newer_when)


def test_one_table_per_aggregate_with_its_own_columns_and_the_date_partition() -> None:
    targets = {t.path: t for t in GoldEncoder({"orders": CONTRACT}).targets("orders")}
    by_category = targets[names.table_path("gold", "orders", "by_category_1m")]
    assert "category" in by_category.schema.names and "country" not in by_category.schema.names
    assert "large_lines" not in by_category.schema.names  # a measure of totals_1h only
    assert by_category.partition_by == (names.DATE_PARTITION,)
    assert by_category.merge_keys == (names.DATE_PARTITION, "aggregate", "window_start", "category")
    assert set(targets) == {names.table_path("gold", "orders", a.name) for a in CONTRACT.aggregates}


def test_a_flush_keeps_the_latest_update_of_each_window_and_group() -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    rows = encoder.encode(records(
        update("by_category_1m", "2025-03-03T23:59:00.000Z", "books", 1, 10),
        update("by_category_1m", "2025-03-03T23:59:00.000Z", None, 2, 10),
        update("by_category_1m", "2025-03-03T23:59:00.000Z", "books", 3, 11),
        update("by_category_1m", "2025-03-04T00:00:00.000Z", "books", 4, 11),
    ))
    assert list(rows) == [names.table_path("gold", "orders", "by_category_1m")]  # no rows, no entry
    got = sorted(rows[names.table_path("gold", "orders", "by_category_1m")].to_pylist(),
                 key=lambda r: (r["window_start"], r["category"] or ""))
    assert [(r[names.DATE_PARTITION], r["category"], r["units"], r["revision"]) for r in got] == [
        (date(2025, 3, 3), None, 2, 10), (date(2025, 3, 3), "books", 3, 11), (date(2025, 3, 4), "books", 4, 11)]


def test_the_table_holds_one_current_row_per_key_and_its_history(tables: Tables) -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 1, 5),
                                  update("by_category_1m", "2025-03-03T06:01:00.000Z", None, 1, 5),
                                  update("totals_1h", "2025-03-03T06:00:00.000Z", None, 2, 5)))
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 4, 9, final=True),
                                  update("by_category_1m", "2025-03-03T06:01:00.000Z", None, 7, 3),  # older: ignored
                                  first_offset=3))
    path = names.table_path("gold", "orders", "by_category_1m")
    current = {r["category"]: (r["units"], r["revision"], r["final"]) for r in tables.read(path).to_pylist()}
    assert current == {"books": (4, 9, True), None: (1, 5, False)}
    first = tables.read(path, as_of=1).to_pylist()  # version 0 created the table, 1 is the first merge
    assert sorted((r["category"] or "", r["units"]) for r in first) == [("", 1), ("books", 1)]
    assert tables.read(names.table_path("gold", "orders", "totals_1h")).num_rows == 1


def test_a_merge_rewrites_only_the_files_of_the_days_it_touches(tables: Tables) -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    for day in range(1, 9):
        land(tables, encoder, records(*(update("by_category_1m", f"2025-03-{day:02d}T06:{m:02d}:00.000Z", "books", 1, day)
                                        for m in range(3)), first_offset=day * 10))
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 5, 99),
                                  first_offset=100))
    table = tables.open(names.table_path("gold", "orders", "by_category_1m"))
    metrics = table.history(1)[0]["operationMetrics"]
    assert metrics["num_target_files_scanned"] == 1 and metrics["num_target_files_skipped_during_scan"] == 7
    assert (metrics["num_target_files_removed"], metrics["num_target_rows_updated"]) == (1, 1)
