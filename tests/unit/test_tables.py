"""Delta tables on a local folder: exactly-once appends and merges, schema evolution, stats, time travel."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from archlab.core.settings import LakeSettings
from archlab.lake.store import Lake
from archlab.lake.tables import Landed, SchemaChangeError, Tables, TableTarget, table_properties

SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("dim", pa.string()),
                    pa.field("revision", pa.int64(), nullable=False), pa.field("value", pa.int64())])


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Lake.local(tmp_path), None)


def rows(*values: tuple[str, str | None, int, int]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SCHEMA.names, v, strict=True)) for v in values], schema=SCHEMA)


def test_append_carries_the_transaction_and_a_repeat_lands_nothing(tables: Tables) -> None:
    table = tables.ensure("silver/t", SCHEMA)
    assert tables.landed_version(table, "g:t.raw:0") is None
    batch = rows(("a", None, 1, 1), ("b", "x", 1, 2))
    tables.append(table, batch, [Landed("g:t.raw:0", 41)])
    tables.append(table, batch, [Landed("g:t.raw:0", 41)])  # e.g. retried after a lost answer
    assert tables.landed_version(table, "g:t.raw:0") == 41
    assert tables.read("silver/t").num_rows == 2


def test_a_table_is_created_with_the_configured_properties(tmp_path: Path) -> None:
    """LAB_CHECKPOINT_EVERY and the retentions hold from a table's first commit, not from the first
    maintenance pass."""
    settings = LakeSettings(s3_access_key="k", s3_secret_key="s", checkpoint_every=7, vacuum_retention_h=36,
                            history_retention_h=48, target_file_mb=16)
    properties = table_properties(settings.checkpoint_every, settings.vacuum_retention_h, settings.history_retention_h,
                                  settings.target_file_mb)
    table = Tables(Lake.local(tmp_path), None, properties).ensure("silver/t", SCHEMA)
    assert table.metadata().configuration == {"delta.checkpointInterval": "7",
                                              "delta.deletedFileRetentionDuration": "interval 36 hours",
                                              "delta.logRetentionDuration": "interval 2 days",
                                              "delta.targetFileSize": str(16 * 1024 * 1024)}


def test_merge_keeps_one_current_row_per_key_null_dimensions_included(tables: Tables) -> None:
    table = tables.ensure("gold/t/a", SCHEMA)
    keys, newer = ["key", "dim"], "s.revision > t.revision"
    tables.merge(table, rows(("a", None, 1, 10), ("b", "x", 1, 5)), keys, [Landed("m", 1)], newer)
    tables.merge(table, rows(("a", None, 2, 11), ("b", "x", 0, 99), ("c", "y", 1, 1)), keys, [Landed("m", 2)], newer)
    current = sorted(tables.read("gold/t/a").to_pylist(), key=lambda r: r["key"])
    assert [(r["key"], r["revision"], r["value"]) for r in current] == [("a", 2, 11), ("b", 1, 5), ("c", 1, 1)]
    assert tables.open("gold/t/a", as_of=1).to_pyarrow_table().num_rows == 2  # time travel: the first merge


def test_new_optional_field_evolves_the_table_and_old_rows_read_null(tables: Tables) -> None:
    table = tables.ensure("silver/t", SCHEMA)
    tables.append(table, rows(("a", None, 1, 1)), [])
    wider = SCHEMA.append(pa.field("note", pa.string()))
    table = tables.ensure("silver/t", wider)
    tables.append(table, pa.Table.from_pylist([{"key": "b", "dim": None, "revision": 1, "value": 2, "note": "n"}],
                                              schema=wider), [])
    notes = {r["key"]: r["note"] for r in tables.read("silver/t").to_pylist()}
    assert notes == {"a": None, "b": "n"}


@pytest.mark.parametrize(("change", "says"), [
    (SCHEMA.set(3, pa.field("value", pa.int32())), "changes type"),
    (SCHEMA.remove(3), "no longer in the contract"),
    (SCHEMA.set(1, pa.field("dim", pa.string(), nullable=False)), "becomes required"),
    (SCHEMA.append(pa.field("must", pa.string(), nullable=False)), "new and required"),
])
def test_an_incompatible_contract_is_refused_naming_the_field(tables: Tables, change: pa.Schema, says: str) -> None:
    tables.ensure("silver/t", SCHEMA)
    with pytest.raises(SchemaChangeError, match=says):
        tables.ensure("silver/t", change)


def test_targets_are_evolved_only_when_none_is_refused(tables: Tables) -> None:
    tables.ensure("silver/t", SCHEMA)
    tables.ensure("dq/t", SCHEMA)
    wider = TableTarget("silver/t", SCHEMA.append(pa.field("note", pa.string())), ())
    narrowed = TableTarget("dq/t", SCHEMA.set(3, pa.field("value", pa.int32())), ())
    with pytest.raises(SchemaChangeError, match="dq/t: field 'value'"):
        tables.ensure_targets([wider, narrowed, TableTarget("quarantine/t", SCHEMA, ())])
    assert (tables.open("silver/t").version(), tables.open("quarantine/t")) == (0, None)  # nothing changed
    tables.ensure_targets([wider, TableTarget("quarantine/t", SCHEMA, ())])
    assert "note" in tables.read("silver/t").column_names and tables.open("quarantine/t") is not None


def test_stats_come_from_the_log(tables: Tables) -> None:
    table = tables.ensure("bronze/t", SCHEMA)
    tables.append(table, rows(("a", None, 1, 1), ("b", None, 1, 1)), [])
    tables.append(table, rows(("c", None, 1, 1)), [])
    stats = tables.stats("bronze/t")
    assert (stats.version, stats.files, stats.rows) == (2, 2, 3) and stats.bytes > 0
    assert tables.stats("bronze/absent") is None
