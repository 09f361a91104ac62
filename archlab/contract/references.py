"""Reference tables: the CSV or Parquet files an enrichment joins to every batch, read and typed.

A reference is read once when a contract loads (to report its problems with the contract's) and
again by each refiner; its join columns take the types of the event fields they match, its other
columns the types the contract declares, and a value that does not convert is a problem, not a null.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from archlab.contract.model import Contract, ContractError, Enrichment
from archlab.contract.types import sql_type
from archlab.core.sql import connect, duckdb_message, quote


def load_references(contract: Contract, contracts_dir: Path) -> dict[str, pa.Table]:
    """Each enrichment's reference table, typed: join columns as their fields, listed columns as declared."""
    tables, problems = read_references(contract, contracts_dir)
    if problems:
        path = contracts_dir / f"{contract.dataset}.yaml"
        raise ContractError("\n".join(f"{path}: {problem}" for problem in problems))
    return tables


def read_references(contract: Contract, contracts_dir: Path) -> tuple[dict[str, pa.Table], list[str]]:
    """The reference tables that could be read, and a ``<location>: <problem>`` line for each other."""
    con = connect()
    tables, problems = {}, []
    for spec in contract.enrichment:
        try:
            tables[spec.name] = _load_reference(con, contract, spec, contracts_dir)
        except ValueError as exc:
            problems.append(f"enrichment.{spec.name}: {exc}")
    return tables, problems


def _load_reference(
    con: duckdb.DuckDBPyConnection, contract: Contract, spec: Enrichment, contracts_dir: Path
) -> pa.Table:
    path = contracts_dir / spec.path
    if not path.is_file():
        raise ValueError(f"reference file {path} does not exist")
    reader = "read_csv(?, header = true, all_varchar = true)" if path.suffix == ".csv" else "read_parquet(?)"
    try:
        source = con.sql(f"SELECT * FROM {reader}", params=[str(path)]).to_arrow_table()
    except duckdb.Error as exc:
        raise ValueError(f"cannot read reference file {path}: {duckdb_message(exc)}") from exc
    wanted = {column: contract.fields[name].type for name, column in spec.on.items()} | dict(spec.columns)
    missing = [column for column in wanted if column not in source.column_names]
    if missing:
        raise ValueError(f"reference file {path} has no column(s) {', '.join(missing)}")
    con.register("reference_source", source)
    typed = ", ".join(f"TRY_CAST({quote(col)} AS {sql_type(t)}) AS {quote(col)}" for col, t in wanted.items())
    table = con.sql(f"SELECT {typed} FROM reference_source").to_arrow_table()
    con.unregister("reference_source")
    for column, type_name in wanted.items():
        if table.column(column).null_count != source.column(column).null_count:
            raise ValueError(f"reference file {path}: column {column} has values that are not {type_name}")
    keys = list(dict.fromkeys(spec.on.values()))
    if any(table.column(column).null_count for column in keys):
        raise ValueError(f"reference file {path}: join column(s) {', '.join(keys)} have empty values")
    if table.group_by(keys).aggregate([]).num_rows != table.num_rows:
        raise ValueError(f"reference file {path}: join column(s) {', '.join(keys)} repeat a value")
    return table
