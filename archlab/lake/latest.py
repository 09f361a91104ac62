"""The latest row per key of a batch of updates: what the gold lake sink merges, and how the API lays
the gold topic's updates over the gold tables.

The gold tables themselves hold one current row per key (they are merged), so no reader of a table
needs this; it is for update streams, where a key's value is its row with the highest ``revision``.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from archlab.contract import quote
from archlab.core import sql


def latest_per_key_sql(source: str, keys: Sequence[str], order_by: str = "revision") -> str:
    """DuckDB SQL for the row with the highest ``order_by`` of every ``keys`` combination in ``source``
    (a table name). A null key value is a value of its own, as in SQL's PARTITION BY."""
    partition = ", ".join(quote(key) for key in keys)
    return (f"SELECT * FROM {source} "
            f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {quote(order_by)} DESC) = 1")


def latest_rows(table: pa.Table, keys: Sequence[str], order_by: str = "revision",
                con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """``latest_per_key_sql`` over an Arrow table, on ``con`` or a one-thread DuckDB of its own."""
    if table.num_rows == 0:
        return table
    con = con if con is not None else sql.connect()
    con.register("_latest_source", table)
    try:
        return con.sql(latest_per_key_sql("_latest_source", keys, order_by)).to_arrow_table()
    finally:
        con.unregister("_latest_source")
