"""The work of a backfill that an engine distributes: raw records of whole Kafka partitions, in offset
order, through the stream's own refine (:class:`~archlab.pipeline.silver.refine.Refiner`) and
de-duplication (:class:`~archlab.pipeline.silver.dedup.DedupState`), kept when they fall in the range.

A partition must be fed from its first bronze record on: whether a record is a duplicate depends on
every earlier one within the contract's horizon, exactly as in the stream (the first by offset wins).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from archlab.batch.span import Span
from archlab.contract import Contract
from archlab.core import names
from archlab.pipeline.silver.dedup import DedupState
from archlab.pipeline.silver.refine import RAW_SCHEMA, Refiner
from archlab.pipeline.silver.stage import dedup_keys

BRONZE_COLUMNS = RAW_SCHEMA.names
"""The bronze columns a rebuild reads (bronze calls them as the refiner does)."""

SETTLED_SCHEMA = pa.schema([pa.field("source_partition", pa.int32(), nullable=False),
                            pa.field("source_offset", pa.int64(), nullable=False),
                            pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False)])
"""Records of the range that are valid now (in silver, or duplicates): their quarantine rows, if an older
contract made any, must go."""


@dataclass(frozen=True, slots=True)
class Piece:
    """What a chunk of raw records gives in the range: silver rows, quarantine rows, settled records."""

    silver: pa.Table
    quarantine: pa.Table
    settled: pa.Table

    @property
    def rows(self) -> int:
        return self.silver.num_rows + self.quarantine.num_rows + self.settled.num_rows


def _in_span(stamps: pa.Array | pa.ChunkedArray, span: Span) -> pa.Array:
    millis = pc.cast(pc.cast(stamps, pa.timestamp("ms", tz="UTC"), safe=False), pa.int64())
    inside = pc.and_(pc.greater_equal(millis, span.start_ms), pc.less(millis, span.end_ms))
    return pc.fill_null(inside, False)


class PartitionRebuild:
    """Refines and de-duplicates consecutive chunks of raw records, each sorted by (partition, offset), a
    partition's chunks in order; one per worker (it holds a DuckDB connection and the dedup state)."""

    def __init__(self, contract: Contract, contracts_dir: Path, span: Span) -> None:
        self.contract = contract
        self.span = span
        self.refiner = Refiner(contract, contracts_dir)
        self.dedup = DedupState(int(contract.dedup.horizon.total_seconds() * 1000))
        self.topic = names.raw_topic(contract.dataset)

    def chunk(self, raw: pa.Table) -> Piece:
        result = self.refiner.refine(raw)
        valid, event_time = result.valid, self.contract.event_time
        as_ms = pc.cast(valid[event_time], pa.timestamp("ms", tz="UTC"), safe=False)  # as the stream: whole ms
        first = self.dedup.first_seen(self.topic, valid["_source_partition"].to_pylist(),
                                      dedup_keys(valid, self.contract), pc.cast(as_ms, pa.int64()).to_pylist())
        in_range = _in_span(valid[event_time], self.span)
        settled = valid.filter(in_range).select(["_source_partition", "_source_offset", "_kafka_timestamp"])
        silver = valid.filter(pc.and_(in_range, pa.array(first, pa.bool_())))
        invalid = result.invalid
        invalid_time = pc.coalesce(pc.cast(result.invalid_event_time, pa.timestamp("ms", tz="UTC"), safe=False),
                                   invalid["kafka_timestamp"])
        return Piece(silver, invalid.filter(_in_span(invalid_time, self.span)),
                     pa.Table.from_arrays(settled.columns, schema=SETTLED_SCHEMA))

    def chunks(self, raw: Iterable[pa.Table]) -> Iterator[Piece]:
        for table in raw:
            if table.num_rows:
                yield self.chunk(table)
