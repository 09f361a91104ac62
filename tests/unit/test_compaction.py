"""Gold compaction on a local lake: only folders of final windows, latest row per key, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from archlab.contract import load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.lake.store import Lake
from archlab.pipeline.gold.compaction import compact_dataset
from archlab.pipeline.wire import from_wire_json

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
FOLDER = "gold/orders/by_category_1m/dt=2025-03-03/hour=06"


def rows(*updates: tuple[str, str | None, int, int, bool]) -> pa.Table:
    """Gold rows of (window start minute, category, units, revision, final)."""
    values = [
        b'{"aggregate": "by_category_1m", "window_start": "2025-03-03T06:%s:00.000Z", "window_end": "2025-03-03T06:%s:59.999Z", '
        b'"category": %s, "units": %d, "events": 1, "late_events": 0, "final": %s, "revision": %d}'
        % (minute.encode(), minute.encode(), b"null" if category is None else b'"%s"' % category.encode(), units,
           b"true" if final else b"false", revision)
        for minute, category, units, revision, final in updates
    ]
    return from_wire_json(values, CONTRACT.gold_schema)


def test_a_folder_of_final_windows_becomes_one_file_of_latest_rows(tmp_path: Path) -> None:
    lake = Lake.local(tmp_path)
    lake.write_parquet(f"{FOLDER}/part-000-1.parquet", rows(("01", "books", 3, 1, False), ("01", None, 2, 1, False)))
    lake.write_parquet(f"{FOLDER}/part-000-2.parquet", rows(("01", "books", 5, 2, True), ("01", None, 4, 2, True)))
    assert compact_dataset(lake, CONTRACT) == 1
    assert lake.list(FOLDER) == [f"{FOLDER}/compacted.parquet"]
    compacted = lake.read_parquet(f"{FOLDER}/compacted.parquet")
    assert sorted(zip(compacted["category"].to_pylist(), compacted["units"].to_pylist()), key=str) == [
        ("books", 5), (None, 4)]


def test_a_folder_with_an_open_window_is_left_alone(tmp_path: Path) -> None:
    lake = Lake.local(tmp_path)
    lake.write_parquet(f"{FOLDER}/part-000-1.parquet", rows(("01", "books", 3, 1, True)))
    lake.write_parquet(f"{FOLDER}/part-000-2.parquet", rows(("02", "books", 1, 2, False)))
    assert compact_dataset(lake, CONTRACT) == 0
    assert len(lake.list(FOLDER)) == 2
