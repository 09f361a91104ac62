"""Bronze: every raw record as received, value bytes untouched, with its Kafka coordinates."""

from __future__ import annotations

import time
from collections.abc import Sequence

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
    time_column = "kafka_timestamp"
    subdir_column = None

    def dataset_of(self, topic: str) -> str:
        return topic.removesuffix(".raw")

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table:
        count = len(records)
        ingest_ms = int(time.time() * 1000)
        columns = [
            pa.array([r.topic for r in records], pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([list(r.headers) if r.headers else None for r in records], pa.list_(HEADER)),
            pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.timestamp_type for r in records], pa.int8()),
            pa.array([ingest_ms] * count, pa.timestamp("ms", tz="UTC")),
        ]
        return pa.Table.from_arrays(columns, schema=BRONZE_SCHEMA)
