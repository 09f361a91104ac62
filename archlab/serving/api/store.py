"""The current value of every gold window key of a dataset: its gold tables, overlaid by the gold topic.

Each aggregate's gold table (``gold/<dataset>/<aggregate>``, a Delta table) holds one current row per
window and group, so its rows are served as they are. A table is re-read whenever its version
changes, and then only the data files not held yet: a merge rewrites a few files, the others stay,
and a file of a committed version never changes or disappears under a reader (maintenance removes it
logically, and vacuums it only after the retention). The topic follower (:mod:`archlab.serving.api.live`)
adds each update as it arrives, because the table lags the topic by up to ``LAB_FLUSH_INTERVAL_S``; a
topic row replaces the table's row of its key only when its ``revision`` is higher.

Queries read an immutable snapshot (one Arrow table per aggregate, one row per window key), so
request threads never wait for a refresh and a page is always consistent. :meth:`GoldView.as_of`
reads an older version of one table instead (time travel), without the topic.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from prometheus_client import Counter, Gauge

from archlab.contract import Aggregate, Contract, quote
from archlab.core import names
from archlab.core.sql import connect as duckdb_connection
from archlab.lake.tables import Tables

log = structlog.get_logger("api.store")

FILES_READ = Counter("lab_api_gold_files_read_total", "Data files of gold tables read", ["dataset"])
LIVE_UPDATES = Counter("lab_api_live_updates_total", "Gold updates read from the gold topic", ["dataset"])
SNAPSHOT_ROWS = Gauge("lab_api_snapshot_rows", "Window keys served (lake and topic merged)", ["dataset"])

TIMESTAMP_SQL = "strftime({}, '%Y-%m-%dT%H:%M:%S.%gZ')"
"""ISO-8601 in UTC with milliseconds and ``Z``, as the gold topic writes timestamps."""
KEY_COLUMN = "_key"
"""A sortable, null-safe text of a row's dimension values (a JSON array), for ordering and cursors."""
AS_OF_TABLES = 16
"""Old table versions kept prepared for ``as_of`` requests (a version never changes, so they stay right)."""
RECEIVED_COLUMN = "_received"
"""When a topic row arrived (monotonic seconds), to forget it once the lake surely holds it."""
VERSION = re.compile(r"[0-9]{1,18}")


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


class BadAsOf(ValueError):
    """An ``as_of`` that is no table version or moment, or names none of the table's versions."""


def parse_as_of(text: str) -> int | datetime:
    """A table version (a whole number) or an ISO-8601 moment (UTC when it has no offset)."""
    if VERSION.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadAsOf(f"as_of {text!r} is neither a table version (0, 1, …) nor an ISO-8601 timestamp") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of a dataset's gold rows; ``version`` changes whenever they do."""

    version: int
    tables: dict[str, pa.Table]  # aggregate -> its own columns + KEY_COLUMN, a row per window key

    def table(self, aggregate: str) -> pa.Table | None:
        return self.tables.get(aggregate)


class GoldTable:
    """One aggregate's gold table as the API holds it: the rows of the latest version it read, by data file."""

    def __init__(self, tables: Tables, contract: Contract, aggregate: Aggregate) -> None:
        self.path = names.table_path("gold", contract.dataset, aggregate.name)
        self.schema = contract.aggregate_schema(aggregate.name)
        self.keys = ["window_start", *aggregate.group_by]
        self._tables = tables
        self._dataset = contract.dataset
        self._table: DeltaTable | None = None
        self._files: dict[str, pa.Table] = {}
        self.version: int | None = None
        self.rows = self.schema.empty_table()

    def refresh(self) -> bool:
        """Read the table's latest version if it changed (only its new files); True when it did."""
        if self._table is None:
            self._table = self._tables.open(self.path)
            if self._table is None:
                return False
        else:
            self._table.update_incremental()
        version = self._table.version()
        if version == self.version:
            return False
        dataset = self._table.to_pyarrow_dataset()
        files = {}
        for fragment in dataset.get_fragments():
            held = self._files.get(fragment.path)
            if held is None:
                held = self._typed(fragment.to_table(schema=dataset.schema, columns=self.schema.names))
                FILES_READ.labels(self._dataset).inc()
            files[fragment.path] = held
        self._files, self.version = files, version
        self.rows = pa.concat_tables(files.values()) if files else self.schema.empty_table()
        return True

    def read(self, as_of: int | datetime) -> tuple[int, pa.Table]:
        """The version ``as_of`` names and its rows; :class:`BadAsOf` when the table has no such version."""
        latest = self._tables.open(self.path)
        if latest is None:
            raise BadAsOf(f"as_of: table {self.path} has no version yet")
        if isinstance(as_of, int) and as_of > latest.version():
            raise BadAsOf(f"as_of: table {self.path} has no version {as_of} (latest: {latest.version()})")
        version = as_of if isinstance(as_of, int) else self._tables.version_at(self.path, as_of)
        if version is None:
            raise BadAsOf(f"as_of {as_of} is before the first version of {self.path} in its history")
        try:
            table = self._tables.open(self.path, version)
        except DeltaError as exc:
            raise BadAsOf(f"as_of: version {version} of {self.path} is no longer in its history: "
                          f"{str(exc).splitlines()[0]}") from None
        assert table is not None, f"{self.path} exists"
        return version, self._typed(table.to_pyarrow_dataset().to_table(columns=self.schema.names))

    def _typed(self, rows: pa.Table) -> pa.Table:
        """Rows as the gold schema types them (Delta keeps timestamps in microseconds)."""
        return rows.cast(self.schema)


def key_text(rows: pa.Table, group_by: list[str]) -> pa.ChunkedArray | pa.Array:
    """Each row's dimension values as one text, a JSON array of their texts (``["DE"]``): a window's rows
    are paged in its order. Computed column-wise, with no query to plan."""
    if not group_by:
        return pa.repeat(pa.scalar("[]"), rows.num_rows)
    parts: list[Any] = ["["]
    for position, dimension in enumerate(group_by):
        text = pc.cast(rows[dimension], pa.string())
        escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        parts += [","] if position else []
        parts.append(pc.fill_null(pc.binary_join_element_wise('"', escaped, '"', ""), "null"))
    return pc.binary_join_element_wise(*parts, "]", "")


def _newest_per_key(rows: pa.Table) -> pa.Table:
    """One row per (window start, key): the highest revision, then the latest received."""
    if rows.num_rows == 0:
        return rows
    ordered = rows.sort_by([("window_start", "ascending"), (KEY_COLUMN, "ascending"), ("revision", "descending"),
                            (RECEIVED_COLUMN, "descending")])
    start, key = ordered["window_start"], ordered[KEY_COLUMN]
    new_key = pc.or_(pc.not_equal(start[1:], start[:-1]), pc.not_equal(key[1:], key[:-1]))
    return ordered.filter(pa.concat_arrays([pa.array([True]), *new_key.chunks]))


class GoldView:
    """What the API knows of one dataset's gold layer.

    A snapshot is rebuilt only for the aggregates whose rows changed (a new table version, new topic
    updates, expired ones), and a rebuild costs a hash join, not a sort: the table's rows are prepared
    once per table version, and only the topic rows that arrived since the last rebuild are converted."""

    def __init__(self, contract: Contract, tables: Tables) -> None:
        self.contract = contract
        self._lake = {a.name: GoldTable(tables, contract, a) for a in contract.aggregates}
        self._lake_prepared = {a.name: self._prepared(a, self._lake[a.name].rows) for a in contract.aggregates}
        self._incoming: dict[str, list[dict[str, Any]]] = {}  # aggregate -> topic rows not merged yet
        self._live: dict[str, pa.Table] = {}  # aggregate -> newest topic row per key, with RECEIVED_COLUMN
        self._oldest_live: dict[str, float] = {}  # aggregate -> when its oldest kept topic row arrived
        self._changed: set[str] = {a.name for a in contract.aggregates}
        self._lock = threading.Lock()
        self._rebuilt_at = float("-inf")
        self.changed = threading.Event()
        """Set whenever a rebuild would change the snapshot (what the rebuild job waits for)."""
        self.changed.set()
        self.lake_loaded = False
        self.snapshot = Snapshot(0, {})
        self._as_of: OrderedDict[tuple[str, int], pa.Table] = OrderedDict()

    # ------------------------------------------------------------------ lake
    def refresh_lake(self) -> bool:
        """Read the gold tables whose version changed; True when any did."""
        changed = {a.name: self._prepared(a, self._lake[a.name].rows)
                   for a in self.contract.aggregates if self._lake[a.name].refresh()}
        if changed:
            with self._lock:
                self._lake_prepared |= changed
                self._changed |= set(changed)
            self.changed.set()
        self.lake_loaded = True
        return bool(changed)

    def as_of(self, aggregate: Aggregate, as_of: int | datetime) -> tuple[int, pa.Table]:
        """The version of an aggregate's gold table that ``as_of`` names, prepared as a snapshot table is."""
        version, rows = self._lake[aggregate.name].read(as_of)
        key = (aggregate.name, version)
        with self._lock:
            prepared = self._as_of.get(key)
        if prepared is None:
            prepared = self._prepared(aggregate, rows)
            with self._lock:
                self._as_of[key] = prepared
                while len(self._as_of) > AS_OF_TABLES:
                    self._as_of.popitem(last=False)
        return version, prepared

    # ------------------------------------------------------------------ topic
    def apply(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take gold updates read from the topic (JSON values); the highest revision of a key wins at the
        next rebuild. Cheap on purpose: it runs on the event loop."""
        count = 0
        with self._lock:
            for row in rows:
                name = row.get("aggregate")
                if name not in self._lake:
                    continue
                self._incoming.setdefault(name, []).append(row)
                self._changed.add(name)
                count += 1
        if count:
            self.changed.set()
        LIVE_UPDATES.labels(self.contract.dataset).inc(count)

    def due(self, spacing_s: float) -> bool:
        """Whether a rebuild would change the snapshot and the last one is ``spacing_s`` old."""
        return self.changed.is_set() and time.monotonic() - self._rebuilt_at >= spacing_s

    def expire_live(self, ttl_s: float) -> None:
        """Forget topic updates older than ``ttl_s`` (by then the lake holds them) at the next rebuild."""
        cutoff = time.monotonic() - ttl_s
        with self._lock:
            stale = {name for name, oldest in self._oldest_live.items() if oldest < cutoff}
            self._changed |= stale
        if stale:
            self.changed.set()

    # ------------------------------------------------------------------ snapshot
    def rebuild(self, ttl_s: float = float("inf")) -> bool:
        """Lay the topic's updates over the tables' rows, for the aggregates whose rows changed; True when
        the snapshot changed. Topic rows older than ``ttl_s`` are dropped."""
        with self._lock:
            self.changed.clear()
            self._rebuilt_at = time.monotonic()
            if not self._changed:
                return False
            changed, self._changed = self._changed, set()
            incoming = {name: self._incoming.pop(name) for name in changed if name in self._incoming}
            lake = dict(self._lake_prepared)
        now = time.monotonic()
        tables = dict(self.snapshot.tables)
        for aggregate in self.contract.aggregates:
            if aggregate.name not in changed:
                continue
            live = self._merged_live(aggregate, incoming.get(aggregate.name, []), now, now - ttl_s)
            tables[aggregate.name] = lake[aggregate.name] if live is None else self._overlay(lake[aggregate.name], live)
        self.snapshot = Snapshot(self.snapshot.version + 1, tables)
        SNAPSHOT_ROWS.labels(self.contract.dataset).set(sum(t.num_rows for t in tables.values()))
        return True

    def _merged_live(self, aggregate: Aggregate, rows: list[dict[str, Any]], now: float, cutoff: float,
                     ) -> pa.Table | None:
        """The newest kept topic row per key: the ones kept so far and ``rows``, without those before ``cutoff``."""
        kept = self._live.get(aggregate.name)
        parts = [] if kept is None else [kept]
        if rows:
            incoming = self._live_table(rows, self._lake[aggregate.name].schema)
            parts.append(incoming.append_column(KEY_COLUMN, key_text(incoming, aggregate.group_by)).append_column(
                RECEIVED_COLUMN, pa.repeat(pa.scalar(now, pa.float64()), incoming.num_rows)))
        live = None
        if parts:
            merged = pa.concat_tables(parts)
            live = _newest_per_key(merged.filter(pc.greater_equal(merged[RECEIVED_COLUMN], cutoff)))
        with self._lock:
            if live is None or live.num_rows == 0:
                self._live.pop(aggregate.name, None)
                self._oldest_live.pop(aggregate.name, None)
                return None
            self._live[aggregate.name] = live
            self._oldest_live[aggregate.name] = pc.min(live[RECEIVED_COLUMN]).as_py()
        return live

    @staticmethod
    def _overlay(lake: pa.Table, live: pa.Table) -> pa.Table:
        """The table's rows with a topic row in place of each one whose revision it exceeds (a hash join)."""
        keys = ["window_start", KEY_COLUMN]
        lake_rows = lake.select([*keys, "revision"]).append_column("_lake_row", pa.array(np.arange(lake.num_rows)))
        live_rows = live.select([*keys, "revision"]).rename_columns([*keys, "_live_revision"]).append_column(
            "_live_row", pa.array(np.arange(live.num_rows)))
        pairs = lake_rows.join(live_rows, keys, join_type="inner")
        newer_live = pc.greater(pairs["_live_revision"], pairs["revision"])
        replaced = pairs.filter(newer_live)["_lake_row"]
        stale = pairs.filter(pc.invert(newer_live))["_live_row"]
        kept_lake = lake.filter(pc.invert(pc.is_in(lake_rows["_lake_row"], value_set=replaced.combine_chunks())))
        kept_live = live.filter(pc.invert(pc.is_in(live_rows["_live_row"], value_set=stale.combine_chunks())))
        return pa.concat_tables([kept_lake, kept_live.select(lake.schema.names).cast(lake.schema)])

    @staticmethod
    def _prepared(aggregate: Aggregate, rows: pa.Table) -> pa.Table:
        """An aggregate's rows with their key text (pages are ordered by window start, then that text)."""
        return rows.append_column(KEY_COLUMN, key_text(rows, aggregate.group_by))

    @staticmethod
    def _live_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
        """Topic rows (JSON values: ISO timestamps, decimals as strings) typed as an aggregate's columns."""
        columns = {}
        for field in schema:
            values = [row.get(field.name) for row in rows]
            if pa.types.is_timestamp(field.type):
                values = [None if v is None else datetime.fromisoformat(v) for v in values]
            elif pa.types.is_decimal(field.type):
                values = [None if v is None else Decimal(str(v)) for v in values]
            columns[field.name] = pa.array(values, field.type)
        return pa.table(columns, schema=schema)

