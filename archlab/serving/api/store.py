"""The latest value of every gold window key of a dataset: the gold lake, overlaid by the gold topic.

The lake is read with DuckDB (s3fs registered, nothing downloaded) whenever its listing changes;
the topic follower (:mod:`archlab.serving.api.live`) adds each update as it arrives, because the lake lags
the topic by up to ``LAB_FLUSH_INTERVAL_S``. Both are merged by taking, per key (aggregate,
window_start, the aggregate's dimensions), the row with the highest ``revision``; a row that
appears twice (a compaction in progress) is the same row, so the merge removes it too.

Queries read an immutable snapshot (one Arrow table per aggregate, sorted by window and key), so
request threads never wait for a refresh and a page is always consistent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from prometheus_client import Counter, Gauge

from archlab.contract import Aggregate, Contract, quote
from archlab.core import names
from archlab.core.sql import connect as duckdb_connection
from archlab.lake.latest import latest_gold
from archlab.lake.query import connect
from archlab.lake.store import Lake

log = structlog.get_logger("api.store")

LAKE_LOADS = Counter("lab_api_lake_objects_read_total", "Gold lake objects read", ["dataset"])
LIVE_UPDATES = Counter("lab_api_live_updates_total", "Gold updates read from the gold topic", ["dataset"])
SNAPSHOT_ROWS = Gauge("lab_api_snapshot_rows", "Window keys served (lake and topic merged)", ["dataset"])

TIMESTAMP_SQL = "strftime({}, '%Y-%m-%dT%H:%M:%S.%gZ')"
"""ISO-8601 in UTC with milliseconds and ``Z``, as the gold topic writes timestamps."""
KEY_COLUMN = "_key"
"""A sortable, null-safe text of a row's dimension values (a JSON array), for ordering and cursors."""


def iso(column: str) -> str:
    return TIMESTAMP_SQL.format(quote(column))


def json_value(column: str, type_: pa.DataType) -> str:
    """SQL that renders a gold column as the API returns it: decimals as exact strings, timestamps ISO."""
    if pa.types.is_decimal(type_):
        return f"CAST({quote(column)} AS VARCHAR)"
    if pa.types.is_timestamp(type_):
        return iso(column)
    return quote(column)


class Sql:
    """Per-thread DuckDB connections: a connection is not safe to share, a cursor per call costs more."""

    def __init__(self) -> None:
        self._local = threading.local()

    def connection(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = duckdb_connection()
        return con

    def query(self, sql: str, params: list[Any], **tables: pa.Table) -> list[tuple[Any, ...]]:
        con = self.connection()
        for name, table in tables.items():
            con.register(name, table)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            for name in tables:
                con.unregister(name)

    def arrow(self, sql: str, params: list[Any], **tables: pa.Table) -> pa.Table:
        con = self.connection()
        for name, table in tables.items():
            con.register(name, table)
        try:
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            for name in tables:
                con.unregister(name)


SQL = Sql()


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of a dataset's gold rows; ``version`` changes whenever they do."""

    version: int
    tables: dict[str, pa.Table]  # aggregate -> its own columns + KEY_COLUMN, sorted by (window_start, key)

    def table(self, aggregate: str) -> pa.Table | None:
        return self.tables.get(aggregate)


class GoldView:
    """What the API knows of one dataset's gold layer."""

    def __init__(self, contract: Contract, lake: Lake) -> None:
        self.contract = contract
        self.schema = contract.gold_schema
        self._lake = lake
        self._prefix = names.table_path("gold", contract.dataset)
        self._files: dict[str, tuple[str, pa.Table]] = {}  # key -> (version tag, its rows)
        self._lake_latest = self.schema.empty_table()
        self._live: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}  # key -> (received, row)
        self._lock = threading.Lock()
        self._dirty = True
        self.lake_loaded = False
        self.snapshot = Snapshot(0, {})
        self._key_sql = {a.name: self._key_expression(a) for a in contract.aggregates}

    # ------------------------------------------------------------------ lake
    def refresh_lake(self) -> bool:
        """Read new or rewritten gold objects, forget deleted ones; True when anything changed."""
        listing = {
            path.removeprefix(self._lake.root + "/"): str(info.get("ETag") or info.get("mtime") or info.get("size"))
            for path, info in self._lake.fs.find(self._lake.path(self._prefix), detail=True).items()
            if path.endswith(".parquet")
        }
        gone = self._files.keys() - listing.keys()
        new = [key for key, tag in listing.items() if self._files.get(key, ("",))[0] != tag]
        for key in gone:
            del self._files[key]
        if new:
            con = connect(self._lake)
            for key in new:
                try:
                    table = con.sql("SELECT * FROM read_parquet(?)", params=[self._lake.url(key)]).to_arrow_table()
                except (duckdb.Error, FileNotFoundError) as exc:
                    # Replaced (compaction) between listing and reading: the next refresh reads its successor.
                    log.info("gold object vanished while reading", key=key, error=str(exc).splitlines()[0])
                    listing.pop(key)
                    continue
                self._files[key] = (listing[key], table.select(self.schema.names).cast(self.schema))
                LAKE_LOADS.labels(self.contract.dataset).inc()
            con.close()
        changed = bool(gone or new)
        if changed:
            tables = [table for _, table in self._files.values()]
            merged = pa.concat_tables(tables) if tables else self.schema.empty_table()
            latest = self._latest(merged)
            with self._lock:
                self._lake_latest = latest
                self._dirty = True
        self.lake_loaded = True
        return changed

    # ------------------------------------------------------------------ topic
    def apply(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take gold updates read from the topic (JSON values); the highest revision of a key wins."""
        now = time.monotonic()
        count = 0
        with self._lock:
            for row in rows:
                key = self.row_key(row)
                if key is None:
                    continue
                held = self._live.get(key)
                if held is None or held[1].get("revision", -1) <= row.get("revision", -1):
                    self._live[key] = (now, row)
                count += 1
            self._dirty = True
        LIVE_UPDATES.labels(self.contract.dataset).inc(count)

    def row_key(self, row: dict[str, Any]) -> tuple[Any, ...] | None:
        """(aggregate, window_start, dimension values) of a topic row; None for an unknown aggregate."""
        try:
            aggregate = self.contract.aggregate(row["aggregate"])
        except KeyError:
            return None
        return (aggregate.name, row["window_start"], *(row.get(d) for d in aggregate.group_by))

    def expire_live(self, ttl_s: float) -> None:
        """Forget topic updates older than ``ttl_s``: by then the lake holds them."""
        cutoff = time.monotonic() - ttl_s
        with self._lock:
            stale = [key for key, (received, _) in self._live.items() if received < cutoff]
            for key in stale:
                del self._live[key]
            if stale:
                self._dirty = True

    # ------------------------------------------------------------------ snapshot
    def rebuild(self) -> bool:
        """Merge lake and topic into a new snapshot when either changed; True when it did."""
        with self._lock:
            if not self._dirty:
                return False
            self._dirty = False
            lake_latest = self._lake_latest
            live_rows = [row for _, row in self._live.values()]
        live = self._live_table(live_rows)
        merged = self._latest(pa.concat_tables([lake_latest, live])) if live.num_rows else lake_latest
        tables = {}
        for aggregate in self.contract.aggregates:
            columns = ["window_start", "window_end", *aggregate.group_by, *(m.name for m in aggregate.measures),
                       "events", "late_events", "final", "revision", "watermark"]
            rows = merged.filter(pc.equal(merged["aggregate"], aggregate.name)).select(columns)
            tables[aggregate.name] = SQL.arrow(
                f"SELECT *, {self._key_sql[aggregate.name]} AS {KEY_COLUMN} FROM rows "
                f"ORDER BY window_start, {KEY_COLUMN}", [], rows=rows,
            )
        self.snapshot = Snapshot(self.snapshot.version + 1, tables)
        SNAPSHOT_ROWS.labels(self.contract.dataset).set(merged.num_rows)
        return True

    def _latest(self, table: pa.Table) -> pa.Table:
        """One row per key: the highest revision (identical duplicates collapse)."""
        return latest_gold(table, self.contract, con=SQL.connection())

    def _live_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """Topic rows (JSON values: ISO timestamps, decimals as strings) typed as the gold schema."""
        if not rows:
            return self.schema.empty_table()
        columns = {}
        for field in self.schema:
            values = [row.get(field.name) for row in rows]
            if pa.types.is_timestamp(field.type):
                values = [None if v is None else datetime.fromisoformat(v) for v in values]
            elif pa.types.is_decimal(field.type):
                values = [None if v is None else Decimal(str(v)) for v in values]
            columns[field.name] = pa.array(values, field.type)
        return pa.table(columns, schema=self.schema)

    @staticmethod
    def _key_expression(aggregate: Aggregate) -> str:
        if not aggregate.group_by:
            return "'[]'"
        parts = ", ".join(f"CAST({quote(d)} AS VARCHAR)" for d in aggregate.group_by)
        return f"CAST(to_json([{parts}]) AS VARCHAR)"
