"""Bronze: every raw record as received, value bytes untouched, with its Kafka coordinates, in the
Delta table ``bronze/<dataset>`` partitioned by ingestion date (the Kafka timestamp's)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter

import pyarrow as pa
from aiokafka.structs import ConsumerRecord

from archlab.core import names
from archlab.lake.store import calendar_date
from archlab.lake.tables import TableTarget

HEADER = pa.struct([pa.field("key", pa.string()), pa.field("value", pa.binary())])
BRONZE_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(HEADER)),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("timestamp_type", pa.int8(), nullable=False),
        pa.field("ingest_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field(names.DATE_PARTITION, pa.date32(), nullable=False),  # of kafka_timestamp, clamped to the calendar
    ]
)


class BronzeEncoder:
    """Lands ``<dataset>.raw`` records in ``bronze/<dataset>`` by ingestion date."""

    layer = "bronze"

    def targets(self, dataset: str) -> list[TableTarget]:
        return [TableTarget(names.table_path(self.layer, dataset), BRONZE_SCHEMA, (names.DATE_PARTITION,))]

    def encode(self, records: Sequence[ConsumerRecord]) -> dict[str, pa.Table]:
        """One partition's records as rows of its dataset's table; columns built with ``map`` (the hot path)."""
        count = len(records)
        first = records[0]
        ms = pa.timestamp("ms", tz="UTC")
        headers = [list(h) if h else None for h in map(_HEADERS, records)]
        stamps = pa.array(list(map(_TIMESTAMP, records)), ms)
        columns = [
            pa.repeat(pa.scalar(first.topic, pa.string()), count),
            pa.repeat(pa.scalar(first.partition, pa.int32()), count),
            pa.array(list(map(_OFFSET, records)), pa.int64()),
            pa.array(list(map(_KEY, records)), pa.binary()),
            pa.array(list(map(_VALUE, records)), pa.binary()),
            pa.array(headers, pa.list_(HEADER)),
            stamps,
            pa.array(list(map(_TIMESTAMP_TYPE, records)), pa.int8()),
            pa.repeat(pa.scalar(int(time.time() * 1000), ms), count),
            calendar_date(stamps),
        ]
        return {names.table_path(self.layer, names.dataset_of(first.topic)):
                pa.Table.from_arrays(columns, schema=BRONZE_SCHEMA)}


_OFFSET, _KEY, _VALUE, _HEADERS, _TIMESTAMP, _TIMESTAMP_TYPE = (
    attrgetter(name) for name in ("offset", "key", "value", "headers", "timestamp", "timestamp_type")
)
