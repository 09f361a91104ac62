"""The gold tables: one current-value Delta table per aggregate, fed from ``<dataset>.gold`` by the
gold lake sink and, alike, by a batch rebuild (:mod:`archlab.batch`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka.structs import ConsumerRecord

from archlab.contract import Aggregate, Contract
from archlab.core import names, sql
from archlab.lake.latest import latest_rows
from archlab.lake.store import calendar_date
from archlab.lake.tables import TableTarget
from archlab.pipeline.wire import from_wire_json

GOLD_DATE = pa.field(names.DATE_PARTITION, pa.date32(), nullable=False)
"""A gold table's partition: the UTC date of the window's start (clamped to the calendar)."""


def gold_target(contract: Contract, aggregate: Aggregate) -> TableTarget:
    """The Delta table of one aggregate: its own columns of the contract's gold schema plus the date
    partition, merged by (date, aggregate, window start, dimensions) so that it holds one current row
    per window and group; a row is replaced only by a higher ``revision``.

    The date is a merge key although the window start implies it: delta-rs prunes a merge's files by
    the partition values (and key statistics) it can read off the batch, so a flush rewrites only the
    files of the days it touches, never the whole table."""
    schema = contract.aggregate_schema(aggregate.name).append(GOLD_DATE)
    keys = (GOLD_DATE.name, "aggregate", "window_start", *aggregate.group_by)
    return TableTarget(names.table_path("gold", contract.dataset, aggregate.name), schema, (GOLD_DATE.name,),
                       merge_keys=keys, newer_when="s.revision > t.revision")


class GoldEncoder:
    """``<dataset>.gold`` to one current-value Delta table per aggregate, ``gold/<dataset>/<aggregate>``."""

    layer = "gold"

    def __init__(self, contracts: dict[str, Contract]) -> None:
        self._contracts = contracts
        self._targets = {name: {a.name: gold_target(c, a) for a in c.aggregates} for name, c in contracts.items()}
        self._threads = threading.local()  # a DuckDB connection per flushing thread, made once (not per flush)

    def targets(self, dataset: str) -> list[TableTarget]:
        return list(self._targets[dataset].values())

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        """Per aggregate table, the latest update of each window and group among ``records`` (a merge
        takes one source row per key)."""
        dataset = names.dataset_of(records[0].topic)
        return self.tables(dataset, [r.value for r in records if r.value is not None])

    def tables(self, dataset: str, values: list[bytes]) -> dict[str, pa.Table]:
        """Gold records (wire JSON) as rows of their aggregates' tables, the latest per window and group;
        the stream's sink and a batch rebuild (``archlab.batch``) shape gold rows alike."""
        rows = from_wire_json(values, self._contracts[dataset].gold_schema)
        con = getattr(self._threads, "con", None)
        if con is None:
            con = self._threads.con = sql.connect()
        out = {}
        for name, target in self._targets[dataset].items():
            mine = rows.filter(pc.equal(rows["aggregate"], name))
            if mine.num_rows:
                mine = mine.append_column(GOLD_DATE, calendar_date(mine["window_start"]))
                out[target.path] = latest_rows(mine, target.merge_keys, con=con).select(target.schema.names).cast(target.schema)
        return out
