"""``lab backfill``'s job: rebuild silver, quarantine and gold of a dataset for a range of event time from
bronze, with the contract as it is now, and replace that range in the Delta tables.

Order: read one bronze snapshot, rebuild on the chosen engine, then commit silver, quarantine and gold
(each table in one commit, :mod:`archlab.batch.replace`). What the range means per table and what happens
to windows the stream still holds open: :mod:`archlab.batch.span`. A rerun reads the same bronze records
(a newer snapshot only adds records after the range's end or late ones) and writes the same rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from deltalake import DeltaTable

from archlab.batch.engines import Engine, Progress, Snapshot, rebuild_duckdb, rebuild_spark, session
from archlab.batch.gold import gold_tables
from archlab.batch.rebuild import SETTLED_SCHEMA, Piece
from archlab.batch.replace import Replaced, replace_gold, replace_quarantine, replace_silver
from archlab.batch.span import BackfillError, Span, final_horizon, plan_span
from archlab.contract import Contract, ContractError, load_contract
from archlab.core import names
from archlab.lake.spark import SparkSettings
from archlab.lake.tables import Tables
from archlab.pipeline.gold.tables import GoldEncoder
from archlab.pipeline.silver.tables import QuarantineEncoder, SilverEncoder, dated_quarantine, dated_silver
from archlab.pipeline.wire import QUARANTINE_SCHEMA

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Report:
    """What a backfill did, and how fast its engine rebuilt."""

    dataset: str
    engine: str
    span: Span
    bronze_version: int
    bronze_rows: int
    rebuild_s: float = 0.0
    startup_s: float = 0.0  # the engine's start (Spark's session); 0 for DuckDB
    commit_s: float = 0.0
    replaced: list[Replaced] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.bronze_rows / self.rebuild_s if self.rebuild_s else 0.0


def contract_of(contracts_dir: Path, dataset: str) -> Contract:
    """The dataset's contract as it is now; :class:`BackfillError` naming the folder when there is none."""
    path = contracts_dir / f"{dataset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in contracts_dir.glob("*.yaml"))
        raise BackfillError(f"unknown dataset {dataset!r}: no {path} (contracts there: {', '.join(known) or 'none'})")
    try:
        return load_contract(path)
    except ContractError as exc:
        raise BackfillError(str(exc)) from exc


def require_bronze(tables: Tables, dataset: str) -> DeltaTable:
    """The dataset's bronze table; :class:`BackfillError` when there is none."""
    path = names.table_path("bronze", dataset)
    table = tables.open(path)
    if table is None:
        raise BackfillError(f"no bronze table {path} on the lake: nothing to rebuild from (is bronze_sink running "
                            f"for {dataset!r}? `lab tables` lists the tables)")
    return table


def bronze_snapshot(tables: Tables, dataset: str) -> Snapshot:
    """The bronze version to read now, with its rows and each Kafka partition's last offset in it."""
    table = require_bronze(tables, dataset)
    path = names.table_path("bronze", dataset)
    version = table.version()
    coordinates = table.to_pyarrow_dataset().to_table(columns=["partition", "offset"])
    if not coordinates.num_rows:
        raise BackfillError(f"bronze table {path} is empty: nothing to rebuild from")
    grouped = coordinates.group_by("partition").aggregate([("offset", "max")])
    last = dict(zip(grouped["partition"].to_pylist(), grouped["offset_max"].to_pylist(), strict=True))
    return Snapshot(path, version, coordinates.num_rows, last)


def plan(tables: Tables, contract: Contract, start_ms: int | None, end_ms: int | None) -> Span:
    """The range that will be rebuilt (see :mod:`archlab.batch.span`)."""
    return plan_span(contract, start_ms, end_ms, final_horizon(tables, contract))


def _joined(pieces: list[Piece], kind: str, schema: pa.Schema) -> pa.Table:
    tables = [t for t in (getattr(p, kind) for p in pieces) if t is not None and t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _by_coordinates(table: pa.Table, partition: str, offset: str) -> pa.Table:
    return table.take(pc.sort_indices(table, [(partition, "ascending"), (offset, "ascending")]))


def backfill(settings: SparkSettings, contracts_dir: Path, dataset: str, span: Span, engine: Engine,
             progress: Progress = lambda _rows: None, *, total: Progress = lambda _rows: None) -> Report:
    """Rebuild ``span`` of ``dataset`` from bronze on ``engine`` and replace it in silver, quarantine and gold."""
    tables = Tables.from_settings(settings)
    contract = contract_of(contracts_dir, dataset)
    snapshot = bronze_snapshot(tables, dataset)
    total(snapshot.rows)
    report = Report(dataset, engine, span, snapshot.version, snapshot.rows)
    started = time.perf_counter()
    if engine == "spark":
        spark, report.startup_s = session(settings)
        started = time.perf_counter()
        pieces = rebuild_spark(spark, settings, snapshot, contract, contracts_dir, span, progress)
    else:
        pieces = rebuild_duckdb(tables, snapshot, contract, contracts_dir, span, progress)
    silver = _by_coordinates(_joined(pieces, "silver", contract.silver_schema), "_source_partition", "_source_offset")
    quarantine = _by_coordinates(_joined(pieces, "quarantine", QUARANTINE_SCHEMA), "source_partition", "source_offset")
    settled = _joined(pieces, "settled", SETTLED_SCHEMA)
    gold = gold_tables(contract, silver)
    report.rebuild_s = time.perf_counter() - started
    log.info("backfill rebuilt", dataset=dataset, engine=engine, range=span.describe(), bronze_rows=snapshot.rows,
             silver=silver.num_rows, quarantine=quarantine.num_rows, seconds=round(report.rebuild_s, 2))

    started = time.perf_counter()
    contracts = {dataset: contract}
    report.replaced.append(replace_silver(tables, SilverEncoder(contracts).targets(dataset)[0], contract, span,
                                          dated_silver(silver, contract), snapshot.last_offsets))
    report.replaced.append(replace_quarantine(tables, QuarantineEncoder().targets(dataset)[0],
                                              dated_quarantine(quarantine), settled))
    for target in GoldEncoder(contracts).targets(dataset):
        report.replaced.append(replace_gold(tables, target, span, gold[target.path]))
    report.commit_s = time.perf_counter() - started
    return report
