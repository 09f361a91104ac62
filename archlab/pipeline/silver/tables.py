"""Encoders that land silver_refiner's topics in Delta tables through the shared LakeSink: silver by
event date with the contract's typed columns, quarantine and dq by arrival date."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka.structs import ConsumerRecord

from archlab.contract import KAFKA_TIMESTAMP, Contract
from archlab.core import names
from archlab.lake.store import calendar_date
from archlab.lake.tables import TableTarget
from archlab.pipeline.silver.stage import DQ_SCHEMA
from archlab.pipeline.wire import QUARANTINE_SCHEMA, quarantine_from_json, silver_from_json

DATE = pa.field(names.DATE_PARTITION, pa.date32(), nullable=False)
"""The date partition every table of this module adds to its rows (a date clamped to the calendar)."""


def _dated(table: pa.Table, stamps: pa.ChunkedArray) -> pa.Table:
    return table.append_column(DATE, calendar_date(stamps))


def _target(layer: str, dataset: str, schema: pa.Schema) -> TableTarget:
    return TableTarget(names.table_path(layer, dataset), schema.append(DATE), (DATE.name,))


class SilverEncoder:
    """``<dataset>.silver`` to ``silver/<dataset>`` by event date (the arrival date where an event has no time)."""

    layer = "silver"

    def __init__(self, contracts: dict[str, Contract]) -> None:
        self._contracts = contracts

    def targets(self, dataset: str) -> list[TableTarget]:
        return [_target(self.layer, dataset, self._contracts[dataset].silver_schema)]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        dataset = names.dataset_of(records[0].topic)
        contract = self._contracts[dataset]
        rows = silver_from_json([r.value for r in records], contract)
        return {names.table_path(self.layer, dataset): dated_silver(rows, contract)}


def dated_silver(rows: pa.Table, contract: Contract) -> pa.Table:
    """Silver rows with their date partition: the event date, the arrival date where an event has no time
    (the stream's sink and a batch rebuild file rows alike)."""
    stamps = pc.coalesce(rows[contract.event_time], rows[KAFKA_TIMESTAMP].cast(rows[contract.event_time].type))
    return _dated(rows, stamps)


def dated_quarantine(rows: pa.Table) -> pa.Table:
    """Quarantine rows with their date partition, the arrival (Kafka) date."""
    return _dated(rows, rows["kafka_timestamp"])


class QuarantineEncoder:
    """``<dataset>.quarantine`` to ``quarantine/<dataset>`` by arrival (Kafka) date."""

    layer = "quarantine"

    def targets(self, dataset: str) -> list[TableTarget]:
        return [_target(self.layer, dataset, QUARANTINE_SCHEMA)]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        rows = quarantine_from_json([r.value for r in records])
        return {names.table_path(self.layer, names.dataset_of(records[0].topic)): dated_quarantine(rows)}


class DqEncoder:
    """``<dataset>.dq`` (quality counts per batch and rule) to ``dq/<dataset>`` by the batch's arrival date."""

    layer = "dq"

    def targets(self, dataset: str) -> list[TableTarget]:
        return [_target(self.layer, dataset, DQ_SCHEMA)]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        rows = [orjson.loads(r.value) for r in records]  # one row per batch and rule, not per event
        columns: dict[str, object] = {name: [row[name] for row in rows] for name in DQ_SCHEMA.names}
        columns["minute"] = pa.array(columns["minute"], pa.string()).cast(pa.timestamp("ms", tz="UTC"))
        table = pa.table(columns, schema=DQ_SCHEMA)
        return {names.table_path(self.layer, names.dataset_of(records[0].topic)): _dated(table, table["minute"])}
