"""What every piece of code running a contract's SQL in DuckDB shares: the connection, quoting, messages.

The load-time checks, the reference tables, the silver refiner and the wire format all use these,
so that SQL is bound at load exactly as it later runs.
"""

from __future__ import annotations

import duckdb


def connect() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection working in UTC, as the engine and the checks use."""
    con = duckdb.connect(config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    return con


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's message without the echo of the (internal) query it was found in."""
    return str(exc).split("\n\nLINE ")[0].replace("\n", " ")
