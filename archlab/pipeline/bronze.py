"""Bronze: every raw record as received, value bytes untouched, with its Kafka coordinates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter

import pyarrow as pa
from aiokafka.structs import ConsumerRecord

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
    ]
)


class BronzeEncoder:
    """Lands ``<dataset>.raw`` records in ``bronze/<dataset>/…`` by Kafka timestamp."""

    layer = "bronze"
    schema = BRONZE_SCHEMA
    subdir_column = None

    def time_column(self, dataset: str) -> str:
        return "kafka_timestamp"

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table:
        """One partition's records as a table; columns built with ``map`` (the hot path)."""
        count = len(records)
        first = records[0]
        ms = pa.timestamp("ms", tz="UTC")
        headers = [list(h) if h else None for h in map(_HEADERS, records)]
        columns = [
            pa.repeat(pa.scalar(first.topic, pa.string()), count),
            pa.repeat(pa.scalar(first.partition, pa.int32()), count),
            pa.array(list(map(_OFFSET, records)), pa.int64()),
            pa.array(list(map(_KEY, records)), pa.binary()),
            pa.array(list(map(_VALUE, records)), pa.binary()),
            pa.array(headers, pa.list_(HEADER)),
            pa.array(list(map(_TIMESTAMP, records)), ms),
            pa.array(list(map(_TIMESTAMP_TYPE, records)), pa.int8()),
            pa.repeat(pa.scalar(int(time.time() * 1000), ms), count),
        ]
        return pa.Table.from_arrays(columns, schema=BRONZE_SCHEMA)


_OFFSET, _KEY, _VALUE, _HEADERS, _TIMESTAMP, _TIMESTAMP_TYPE = (
    attrgetter(name) for name in ("offset", "key", "value", "headers", "timestamp", "timestamp_type")
)
