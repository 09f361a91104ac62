"""The one DuckDB connection factory, with quoting and error messages: every query the project runs starts here.

Contract checks, reference tables, the silver refiner, the wire format, gold, the API and lake readers all
use it, so that SQL is bound at load exactly as it later runs, in UTC whatever the machine's zone.
"""

from __future__ import annotations

import threading

import duckdb

_process_database: duckdb.DuckDBPyConnection | None = None
_process_database_lock = threading.Lock()


def connect(threads: int | None = 1) -> duckdb.DuckDBPyConnection:
    """A private DuckDB connection working in UTC: its own session (registered tables, temporary tables,
    settings), one thread unless asked (``None``: every core).

    One thread is the default because services run many small queries beside their event loop. Such
    connections are cursors on one in-memory database per process: each database starts its own eight
    threads and memory pools, and services keep a connection per worker thread (gold ran 88 threads)."""
    if threads != 1:
        con = duckdb.connect(config={} if threads is None else {"threads": threads})
    else:
        con = _process_cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _process_cursor() -> duckdb.DuckDBPyConnection:
    global _process_database
    with _process_database_lock:  # cursor() on one connection from several threads at once is not safe
        if _process_database is None:
            _process_database = duckdb.connect(config={"threads": 1})
        return _process_database.cursor()


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's message without the echo of the (internal) query it was found in."""
    return str(exc).split("\n\nLINE ")[0].replace("\n", " ")
