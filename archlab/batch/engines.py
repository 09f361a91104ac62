"""The engines that distribute a backfill's rebuild (:mod:`archlab.batch.rebuild`) over bronze's partitions.

Both read one bronze snapshot (a Delta version), feed each Kafka partition's records in offset order
to a :class:`~archlab.batch.rebuild.PartitionRebuild`, and return the range's pieces; what they return is
the same whatever the engine, and the driver commits it (delta-rs: the one writer of the lake, see
:mod:`archlab.lake.spark` on why Spark does not write).

- ``duckdb`` (default): embedded; DuckDB reads the snapshot, sorts it by (partition, offset) and streams
  it in chunks, one partition after the other, through one rebuild.
- ``spark``: Spark reads the same version through Delta on ``s3a://``, repartitions it by Kafka partition,
  sorts within partitions, and runs the rebuild per Spark partition with ``mapInArrow``; each piece comes
  back to the driver as Arrow IPC bytes (exact types, no re-encoding). Workers load the contract from the
  same ``contracts_dir`` path (on a cluster, that folder must be there on every worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from archlab.batch.rebuild import BRONZE_COLUMNS, PartitionRebuild, Piece
from archlab.batch.span import Span
from archlab.contract import Contract, load_contract
from archlab.core import sql
from archlab.core.sql import quote
from archlab.lake.spark import SparkSettings, s3a_uri, spark_session
from archlab.lake.tables import Tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

Engine = Literal["duckdb", "spark"]
Progress = Callable[[int], None]
CHUNK_ROWS = 50_000
"""Raw records refined at a time (bounded memory; the refine is vectorised per chunk)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The bronze version a backfill reads, and per Kafka partition the last offset that version holds."""

    path: str
    version: int
    rows: int
    last_offsets: dict[int, int]


def rebuild_duckdb(tables: Tables, snapshot: Snapshot, contract: Contract, contracts_dir: Path, span: Span,
                   progress: Progress) -> list[Piece]:
    """The rebuild on DuckDB, in this process."""
    con = sql.connect()
    bronze = tables.open(snapshot.path, snapshot.version)
    assert bronze is not None, snapshot.path
    con.register("bronze", bronze.to_pyarrow_dataset())
    columns = ", ".join(quote(name) for name in BRONZE_COLUMNS)
    reader = con.sql(f"SELECT {columns} FROM bronze ORDER BY partition, \"offset\"").to_arrow_reader(CHUNK_ROWS)
    rebuild = PartitionRebuild(contract, contracts_dir, span)
    pieces = []
    for batch in reader:
        pieces.append(rebuild.chunk(pa.Table.from_batches([batch])))
        progress(batch.num_rows)
    return pieces


_PIECE_SCHEMA = "kind string, body binary"
_KINDS = ("silver", "quarantine", "settled")


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _spark_partition(batches: Iterator[pa.RecordBatch], *, contracts_dir: str, dataset: str, span: Span,
                     counter: object) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function: one Spark partition (whole Kafka partitions, sorted) through one rebuild."""
    contract = load_contract(Path(contracts_dir) / f"{dataset}.yaml")
    rebuild = PartitionRebuild(contract, Path(contracts_dir), span)
    pending: list[pa.RecordBatch] = []
    for batch in batches:
        pending.append(batch)
        if sum(b.num_rows for b in pending) >= CHUNK_ROWS:
            yield from _pieces(rebuild, pending, counter)
            pending = []
    if pending:
        yield from _pieces(rebuild, pending, counter)


def _pieces(rebuild: PartitionRebuild, batches: list[pa.RecordBatch], counter: object) -> Iterator[pa.RecordBatch]:
    piece = rebuild.chunk(pa.Table.from_batches(batches))
    counter.add(sum(b.num_rows for b in batches))  # type: ignore[attr-defined]
    for kind in _KINDS:
        table = getattr(piece, kind)
        if table.num_rows:
            yield pa.RecordBatch.from_pydict({"kind": [kind], "body": [_ipc(table)]})


def rebuild_spark(spark: SparkSession, settings: SparkSettings, snapshot: Snapshot, contract: Contract,
                  contracts_dir: Path, span: Span, progress: Progress) -> list[Piece]:
    """The rebuild on Spark: bronze's snapshot read through Delta, one Kafka partition's records per task."""
    bronze = (spark.read.format("delta").option("versionAsOf", snapshot.version)
              .load(s3a_uri(settings, snapshot.path)).select(*BRONZE_COLUMNS))
    counter = spark.sparkContext.accumulator(0)
    work = partial(_spark_partition, contracts_dir=str(contracts_dir), dataset=contract.dataset, span=span,
                   counter=counter)
    spread = max(1, len(snapshot.last_offsets))
    frame = (bronze.repartition(spread, "partition").sortWithinPartitions("partition", "offset")
             .mapInArrow(work, _PIECE_SCHEMA))
    collected: list = []
    failure: list[BaseException] = []

    def collect() -> None:
        try:
            collected.extend(frame.collect())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            failure.append(exc)

    worker = threading.Thread(target=collect, name="spark-backfill")
    worker.start()
    reported = 0
    while worker.is_alive():  # an accumulator reaches the driver as each task ends
        worker.join(0.5)
        if counter.value > reported:
            progress(counter.value - reported)
            reported = counter.value
    if failure:
        raise failure[0]
    if counter.value > reported:
        progress(counter.value - reported)
    parts: dict[str, list[pa.Table]] = {kind: [] for kind in _KINDS}
    for row in collected:
        parts[row["kind"]].append(pa.ipc.open_stream(row["body"]).read_all())
    return [Piece(*(pa.concat_tables(parts[kind]) if parts[kind] else None for kind in _KINDS))]


def session(settings: SparkSettings) -> tuple[SparkSession, float]:
    """The Spark session (``LAB_SPARK_MASTER``, local by default; workers run ``LAB_SPARK_PYTHON``) and
    the seconds it took to start."""
    started = time.perf_counter()
    spark = spark_session(settings, app_name="archlab-backfill")
    return spark, time.perf_counter() - started
