"""The one DuckDB connection factory: each connection is its own session, and a service holding a
connection per worker thread does not start a database (and its threads) per connection."""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pytest

from archlab.core import sql


def process_threads() -> int:
    return int(open(f"/proc/{os.getpid()}/status").read().split("Threads:")[1].split()[0])


def test_connections_are_separate_sessions() -> None:
    first, second = sql.connect(), sql.connect()
    first.register("batch", pa.table({"v": [1]}))
    first.execute("CREATE TEMP TABLE event (v INTEGER)")
    first.execute("PRAGMA disable_optimizer")
    second.execute("SET TimeZone = 'Europe/Paris'")
    for name in ("batch", "event"):
        with pytest.raises(duckdb.CatalogException):
            second.sql(f"SELECT * FROM {name}").fetchall()
    assert second.execute("SELECT current_setting('enable_optimizer')").fetchone() == (True,)
    assert first.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    assert sql.connect().execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)


def test_more_connections_start_no_threads() -> None:
    sql.connect()  # the process's database exists from here on
    before = process_threads()
    connections = [sql.connect() for _ in range(8)]
    sums = [con.execute("SELECT sum(range) FROM range(100000)").fetchone() for con in connections]
    started = process_threads() - before
    assert sums == [(4999950000,)] * 8
    assert started < 8, f"{started} threads started for 8 connections (a database of its own starts 8)"


def test_every_core_is_a_database_of_its_own() -> None:
    con = sql.connect(threads=None)
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == os.cpu_count()
    assert sql.connect().execute("SELECT current_setting('threads')").fetchone() == (1,)
