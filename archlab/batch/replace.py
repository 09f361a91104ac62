"""The range replaced in the Delta tables, one commit per table, so that a reader of a table sees its old
range or its new one, never a mix; rows outside the range are not touched.

- silver: ``overwrite`` with a predicate (the range in event time, and only the raw records the backfill
  read: offsets up to what the bronze snapshot held, per partition), so a row the stream appends meanwhile
  for a newer record is kept;
- quarantine: a ``merge`` by (date, source partition, source offset) that upserts the range's quarantined
  records and deletes the rows of records that are valid now: a quarantined record's event time is not a
  column, so no predicate could name the range's rows;
- gold: per aggregate, ``overwrite`` of the windows that start in the range (all final in the stream).

A commit that loses a race with a writer of the stream (the lake sinks append and merge all the time) is
retried on the table's new version: delta-rs then checks the concurrent commits again, and nothing either
side wrote is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from archlab.batch.span import Span, iso
from archlab.contract import Contract
from archlab.core import names
from archlab.core.sql import quote
from archlab.lake.store import calendar_date
from archlab.lake.tables import Tables, TableTarget

_DROP = "lab_backfill_drop"


@dataclass(frozen=True, slots=True)
class Replaced:
    """One table's replacement: its path, the version committed, and the rows the range now holds."""

    path: str
    version: int
    rows: int


def _between(column: str, span: Span) -> str:
    return f"{quote(column)} >= '{iso(span.start_ms)}' AND {quote(column)} < '{iso(span.end_ms)}'"


def _days(span: Span) -> str:
    """The date partitions the range can touch: lets delta-rs skip every other day's files."""
    first, last = (calendar_date(pa.array([ms], pa.timestamp("ms", tz="UTC")))[0].as_py()
                   for ms in (span.start_ms, span.end_ms - 1))
    return f"{quote(names.DATE_PARTITION)} >= '{_day(first)}' AND {quote(names.DATE_PARTITION)} <= '{_day(last)}'"


def _day(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _committed(table: DeltaTable, commit: Callable[[], None]) -> int:
    """Run ``commit`` until it lands, each attempt on the table's newest version; the version it made."""
    for attempt in Retrying(retry=retry_if_exception_type(CommitFailedError), reraise=True,
                            wait=wait_exponential(multiplier=0.05, max=2.0), stop=stop_after_attempt(50)):
        with attempt:
            table.update_incremental()
            commit()
    table.update_incremental()
    return table.version()


def replace_silver(tables: Tables, target: TableTarget, contract: Contract, span: Span, rows: pa.Table,
                   read_up_to: dict[int, int]) -> Replaced:
    """Silver's range replaced by ``rows`` (already dated), for the records of ``read_up_to`` (raw partition ->
    last offset the backfill read)."""
    table = tables.ensure(target.path, target.schema, target.partition_by)
    records = " OR ".join(f"({quote('_source_partition')} = {partition} AND {quote('_source_offset')} <= {offset})"
                          for partition, offset in sorted(read_up_to.items())) or "false"
    predicate = f"{_days(span)} AND {_between(contract.event_time, span)} AND ({records})"
    data = rows.select(target.schema.names).cast(target.schema)
    version = _committed(table, lambda: write_deltalake(table, data, mode="overwrite", predicate=predicate))
    return Replaced(target.path, version, data.num_rows)


def replace_quarantine(tables: Tables, target: TableTarget, rows: pa.Table, settled: pa.Table) -> Replaced:
    """The range's quarantine: ``rows`` (dated) upserted, the rows of ``settled`` records deleted, in one merge."""
    table = tables.ensure(target.path, target.schema, target.partition_by)
    keys = (names.DATE_PARTITION, "source_partition", "source_offset")
    loose = pa.schema([field.with_nullable(True) for field in target.schema]).append(pa.field(_DROP, pa.bool_()))
    upserts = rows.select(target.schema.names).cast(target.schema).append_column(
        _DROP, pa.repeat(pa.scalar(False), rows.num_rows))
    settled_dt = calendar_date(settled["kafka_timestamp"])
    drops = pa.Table.from_pydict(
        {name: (settled_dt if name == names.DATE_PARTITION else settled[name] if name in keys
                else pa.nulls(settled.num_rows, field.type)) for name, field in zip(loose.names, loose, strict=True)
         if name != _DROP} | {_DROP: pa.repeat(pa.scalar(True), settled.num_rows)}, schema=loose)
    source = pa.concat_tables([upserts.cast(loose), drops])
    if not source.num_rows:
        table.update_incremental()
        return Replaced(target.path, table.version(), 0)
    # A record quarantined twice under an older contract cannot be: one source row per key.
    match = " AND ".join(f"t.{quote(key)} = s.{quote(key)}" for key in keys)
    columns = {name: f"s.{quote(name)}" for name in target.schema.names}

    def merge() -> None:
        (table.merge(source, predicate=match, source_alias="s", target_alias="t", streamed_exec=False)
         .when_matched_delete(predicate=f"s.{_DROP}")
         .when_matched_update(updates=columns)
         .when_not_matched_insert(updates=columns, predicate=f"NOT s.{_DROP}")
         .execute())

    return Replaced(target.path, _committed(table, merge), rows.num_rows)


def replace_gold(tables: Tables, target: TableTarget, span: Span, rows: pa.Table) -> Replaced:
    """One aggregate's windows that start in the range replaced by ``rows``."""
    table = tables.ensure(target.path, target.schema, target.partition_by)
    predicate = f"{_days(span)} AND {_between('window_start', span)}"
    data = rows.select(target.schema.names).cast(target.schema)
    order = pc.sort_indices(data, [(name, "ascending") for name in target.merge_keys or ()])
    data = data.take(order)
    version = _committed(table, lambda: write_deltalake(table, data, mode="overwrite", predicate=predicate))
    return Replaced(target.path, version, data.num_rows)
