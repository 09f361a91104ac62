"""Reading the lake: the tables it holds, and a table's size from its Delta log alone."""

from __future__ import annotations

from collections.abc import Sequence

from deltalake import DeltaTable

from archlab.core import names
from archlab.lake.tables import Tables, TableStats


def lake_tables(tables: Tables, datasets: Sequence[str]) -> list[str]:
    """The path of every Delta table of ``datasets``, layer by layer: ``<layer>/<dataset>`` when it is
    a table, else each table in it (gold's one per aggregate, found on the lake, so a table of an
    aggregate that no contract lists any more shows too)."""
    found = []
    for dataset in datasets:
        for layer in names.LAYERS:
            path = names.table_path(layer, dataset)
            if _is_table(tables, path):
                found.append(path)
                continue
            try:
                entries = tables.lake.fs.ls(tables.lake.path(path), detail=True)
            except FileNotFoundError:
                continue
            inner = (names.table_path(layer, dataset, entry["name"].rstrip("/").rpartition("/")[2])
                     for entry in entries if entry["type"] == "directory")
            found += sorted(p for p in inner if _is_table(tables, p))
    return found


def _is_table(tables: Tables, path: str) -> bool:
    return DeltaTable.is_deltatable(tables.uri(path), tables.storage_options)


def table_stats(tables: Tables, layer: str, dataset: str, aggregate: str | None = None) -> TableStats:
    """Version, files, rows and bytes of one table from its Delta log (rows are the add actions'
    ``numRecords``: exact, and no data file is read); zeros and version -1 before its first commit."""
    path = names.table_path(layer, dataset, aggregate)
    return tables.stats(path) or TableStats(path=path, version=-1, files=0, rows=0, bytes=0, last_commit=None)
