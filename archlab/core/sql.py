"""The one DuckDB connection factory, with quoting and error messages: every query the project runs starts here.

Contract checks, reference tables, the silver refiner, the wire format, gold, the API and lake readers all
use it, so that SQL is bound at load exactly as it later runs, in UTC whatever the machine's zone.
"""

from __future__ import annotations

import duckdb


def connect(threads: int | None = 1) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection working in UTC; one thread unless asked (``None``: every core).

    One thread is the default because services run many small queries beside their event loop."""
    con = duckdb.connect(config={} if threads is None else {"threads": threads})
    con.execute("SET TimeZone = 'UTC'")
    return con


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's message without the echo of the (internal) query it was found in."""
    return str(exc).split("\n\nLINE ")[0].replace("\n", " ")
