"""Encoders that land silver_refiner's topics on the lake through the shared LakeSink:
silver by event time with the contract's typed columns, quarantine and dq by arrival time."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pyarrow as pa
from aiokafka.structs import ConsumerRecord

from archlab.contract import Contract
from archlab.core import names
from archlab.pipeline.silver.stage import DQ_SCHEMA
from archlab.pipeline.wire import quarantine_from_json, silver_from_json


class SilverEncoder:
    """``<dataset>.silver`` to ``silver/<dataset>/`` by the contract's event time."""

    layer = "silver"
    subdir_column = None

    def __init__(self, contracts: dict[str, Contract]) -> None:
        self._contracts = contracts

    def time_column(self, dataset: str) -> str:
        return self._contracts[dataset].event_time

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table:
        contract = self._contracts[names.dataset_of(records[0].topic)]
        return silver_from_json([r.value for r in records], contract)


class QuarantineEncoder:
    """``<dataset>.quarantine`` to ``quarantine/<dataset>/`` by arrival (Kafka) time."""

    layer = "quarantine"
    subdir_column = None

    def time_column(self, dataset: str) -> str:
        return "kafka_timestamp"

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table:
        return quarantine_from_json([r.value for r in records])


class DqEncoder:
    """``<dataset>.dq`` (quality counts per batch and rule) to ``dq/<dataset>/`` by minute."""

    layer = "dq"
    subdir_column = None

    def time_column(self, dataset: str) -> str:
        return "minute"

    def encode(self, records: Sequence[ConsumerRecord]) -> pa.Table:
        rows = [orjson.loads(r.value) for r in records]  # one row per batch and rule, not per event
        columns: dict[str, object] = {name: [row[name] for row in rows] for name in DQ_SCHEMA.names}
        columns["minute"] = pa.array(columns["minute"], pa.string()).cast(pa.timestamp("ms", tz="UTC"))
        return pa.table(columns, schema=DQ_SCHEMA)
