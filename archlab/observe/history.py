"""The alerts' history on the lake: every state written to ``<dataset>.alerts`` appended to the Delta
table ``alert_history/<dataset>`` by its update date, through the shared lake sink (exactly once: the
sink's application transactions carry the topic's offsets). The compacted topic keeps only each
alert's current state; this table keeps every change."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from aiokafka.structs import ConsumerRecord

from archlab.core import names
from archlab.core.alerts import Alert
from archlab.lake.store import calendar_date
from archlab.lake.tables import TableTarget

LAYER = "alert_history"
STAMP = pa.timestamp("ms", tz="UTC")
HISTORY_SCHEMA = pa.schema([
    pa.field("alert_id", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("objective", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("opened_at", STAMP, nullable=False),
    pa.field("resolved_at", STAMP),
    pa.field("updated_at", STAMP, nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("threshold", pa.float64(), nullable=False),
    pa.field("unit", pa.string(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
])
DATE = pa.field(names.DATE_PARTITION, pa.date32(), nullable=False)


class AlertHistoryEncoder:
    """``<dataset>.alerts`` to ``alert_history/<dataset>`` (a ``BatchEncoder`` of the lake sink)."""

    layer = LAYER

    def targets(self, dataset: str) -> list[TableTarget]:
        return [TableTarget(names.table_path(LAYER, dataset), HISTORY_SCHEMA.append(DATE), (DATE.name,))]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        alerts = [Alert.from_json(r.value) for r in records if r.value]  # the observer writes only valid ones
        rows = [alert.model_dump(mode="python") for alert in alerts]
        table = pa.Table.from_pylist([{name: row[name] for name in HISTORY_SCHEMA.names} for row in rows],
                                     schema=HISTORY_SCHEMA)
        table = table.append_column(DATE, calendar_date(table["updated_at"]))
        return {names.table_path(LAYER, names.dataset_of(records[0].topic)): table}
