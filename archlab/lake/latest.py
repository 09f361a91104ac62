"""The latest row per key: how every reader of gold turns its update rows into current values.

Gold lands one row per update of a window and a compaction can leave a row twice for a moment,
so the value of a key is its row with the highest ``revision``. Gold compaction, the API's
snapshot, the exactly-once verifier and the tests all ask this one question here.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from archlab.contract import Contract, quote
from archlab.core import sql


def latest_per_key_sql(source: str, keys: Sequence[str], order_by: str = "revision", where: str | None = None,
                       sort: bool = False) -> str:
    """DuckDB SQL for the row with the highest ``order_by`` of every ``keys`` combination in
    ``source`` (a table name or ``read_parquet(...)``), optionally filtered by ``where`` first and
    sorted by the keys. A null key value is a value of its own, as in SQL's PARTITION BY."""
    partition = ", ".join(quote(key) for key in keys)
    return (
        f"SELECT * FROM {source}" + (f" WHERE {where}" if where else "")
        + f" QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY {quote(order_by)} DESC) = 1"
        + (f" ORDER BY {partition}" if sort else "")
    )


def gold_key_columns(contract: Contract) -> list[str]:
    """The columns that name a gold value: aggregate, window start and every aggregate's
    dimensions (an aggregate that does not group by a dimension leaves it null)."""
    dimensions = dict.fromkeys(dim for aggregate in contract.aggregates for dim in aggregate.group_by)
    return ["aggregate", "window_start", *dimensions]


def latest_rows(table: pa.Table, keys: Sequence[str], order_by: str = "revision", sort: bool = False,
                con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """``latest_per_key_sql`` over an Arrow table, on ``con`` or a one-thread DuckDB of its own."""
    if table.num_rows == 0:
        return table
    con = con if con is not None else sql.connect()
    con.register("_latest_source", table)
    try:
        return con.sql(latest_per_key_sql("_latest_source", keys, order_by, sort=sort)).to_arrow_table()
    finally:
        con.unregister("_latest_source")


def latest_gold(table: pa.Table, contract: Contract, sort: bool = False,
                con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """The current value of every gold key among ``table``'s update rows, typed as the gold schema."""
    return latest_rows(table, gold_key_columns(contract), sort=sort, con=con).cast(contract.gold_schema)
