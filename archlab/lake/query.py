"""DuckDB over the lake: one connection factory, so tests, ``lab status`` and the API agree."""

from __future__ import annotations

import duckdb

from archlab.core import names
from archlab.lake.store import Lake


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads the lake through the lake's own fsspec filesystem.

    Registering s3fs avoids the httpfs extension, which DuckDB would download at run time.
    """
    connection = duckdb.connect()
    if lake.is_s3:
        connection.register_filesystem(lake.fs)
    return connection


def layer_glob(lake: Lake, layer: str, dataset: str, subdir: str | None = None) -> str:
    """The Parquet glob of a layer's dataset, for ``read_parquet(..., hive_partitioning=true)``."""
    return lake.url(f"{names.table_path(layer, dataset, subdir)}/**/*.parquet")


def count_rows(lake: Lake, layer: str, dataset: str) -> tuple[int, int]:
    """(objects, rows) of a layer's dataset; (0, 0) when nothing has landed yet."""
    objects = [key for key in lake.list(names.table_path(layer, dataset)) if key.endswith(".parquet")]
    if not objects:
        return 0, 0
    rows = connect(lake).execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning=false)", [layer_glob(lake, layer, dataset)]
    ).fetchone()
    return len(objects), int(rows[0]) if rows else 0
