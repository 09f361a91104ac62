"""The checks only a database can make on a contract, run by DuckDB when the contract loads.

Each regex is compiled, each reference table read and typed, and each derived field, rule and
``count_if`` condition is bound against an empty table with the columns it may read, so that a
contract whose SQL would fail on the first batch is refused before any service starts.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from archlab.contract.model import KAFKA_TIMESTAMP, Contract
from archlab.contract.references import read_references
from archlab.contract.types import base_type, sql_type
from archlab.core.sql import connect, duckdb_message, quote

_DECIMAL_SQL = re.compile(r"^DECIMAL\(\d+,\d+\)$")


def check_sql(contract: Contract, contracts_dir: Path) -> list[str]:
    """Problems (``<location>: <problem>``) DuckDB finds: regexes, reference tables, derived fields, rules."""
    con = connect()
    problems = []
    for name, spec in contract.fields.items():
        if spec.regex is not None:
            try:
                con.execute("SELECT regexp_matches('', ?)", [spec.regex])
            except duckdb.Error as exc:
                problems.append(
                    f"fields.{name}.regex: invalid regular expression {spec.regex!r}: {duckdb_message(exc)}"
                )
    problems += read_references(contract, contracts_dir)[1]
    columns = [f"{quote(name)} {sql_type(spec.type)}" for name, spec in contract.fields.items()]
    columns.append(f"{KAFKA_TIMESTAMP} TIMESTAMPTZ")
    for spec in contract.enrichment:
        members = ", ".join(f"{quote(col)} {sql_type(t)}" for col, t in spec.columns.items())
        columns.append(f"{quote(spec.name)} STRUCT({members})")
    con.execute(f"CREATE TEMP TABLE event ({', '.join(columns)})")
    for derived in contract.derived:
        expression = f"CAST(({derived.sql}) AS {sql_type(derived.type)})"
        problem = _bind(con, derived.sql, f"SELECT * FROM event WHERE {expression} IS NULL")
        if problem is None:
            result = con.execute(f"DESCRIBE SELECT ({derived.sql}) AS v FROM event").fetchall()[0][1]
            if _family(result) not in _CASTS_TO[base_type(derived.type)]:
                problem = f"sql gives {result}, which does not convert to {derived.type}"
        if problem:
            problems.append(f"derived.{derived.name}: {problem}")
        # later derived fields and rules may use this one, even when it is broken
        con.execute(f"ALTER TABLE event ADD COLUMN {quote(derived.name)} {sql_type(derived.type)}")
    for rule in contract.rules:
        problem = _boolean_problem(con, rule.sql, "event")
        if problem:
            problems.append(f"rules.{rule.name}: {problem}")
    return problems + _check_conditions(contract, con)


def _boolean_problem(con: duckdb.DuckDBPyConnection, expression: str, table: str) -> str | None:
    """Why ``expression`` is not a valid boolean expression over ``table``, or None."""
    problem = _bind(con, expression, f"SELECT * FROM {table} WHERE ({expression})")
    if problem is None:
        result = con.execute(f"DESCRIBE SELECT ({expression}) AS r FROM {table}").fetchall()[0][1]
        problem = None if result == "BOOLEAN" else f"sql must be a boolean expression, but gives {result}"
    return problem


def _check_conditions(contract: Contract, con: duckdb.DuckDBPyConnection) -> list[str]:
    """Each ``count_if`` condition must be a boolean expression over silver columns."""
    problems = []
    columns = ", ".join(f"{quote(name)} {sql_type(t)}" for name, t in contract.silver_types())
    con.execute(f"CREATE TEMP TABLE silver ({columns})")
    for aggregate in contract.aggregates:
        for measure in aggregate.measures:
            if measure.condition is None:
                continue
            problem = _boolean_problem(con, measure.condition, "silver")
            if problem:
                problems.append(f"aggregates.{aggregate.name}.measures.{measure.name}.condition: {problem}")
    return problems


_CASTS_TO: dict[str, set[str]] = {
    "string": {"number", "bool", "string", "date", "timestamp", "null", "other"},
    "int": {"number", "bool", "string", "null"},
    "float": {"number", "bool", "string", "null"},
    "decimal": {"number", "bool", "string", "null"},
    "bool": {"number", "bool", "string", "null"},
    "date": {"date", "timestamp", "string", "null"},
    "timestamp": {"date", "timestamp", "string", "null"},
}
"""Which families of DuckDB result types a derived field of each contract type may be cast from.

DuckDB binds casts such as BOOLEAN -> DATE and fails only when a row arrives; these are refused at load.
"""


_FAMILIES = {
    **dict.fromkeys(
        [
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "UHUGEINT",
            "FLOAT",
            "DOUBLE",
        ],
        "number",
    ),
    **dict.fromkeys(
        ["TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"], "timestamp"
    ),
    "BOOLEAN": "bool",
    "VARCHAR": "string",
    "DATE": "date",
    '"NULL"': "null",
}


def _family(duckdb_type: str) -> str:
    """The family of a DuckDB type name as DESCRIBE prints it; lists, structs, intervals… are "other"."""
    return "number" if _DECIMAL_SQL.match(duckdb_type) else _FAMILIES.get(duckdb_type, "other")


def _bind(con: duckdb.DuckDBPyConnection, expression: str, query: str) -> str | None:
    """Why DuckDB refuses ``expression`` (one expression, no aggregate or window) in ``query``, or None."""
    try:
        duckdb.SQLExpression(expression)
        con.execute(f"{query} LIMIT 0")
    except duckdb.Error as exc:
        return f"invalid sql {expression!r}: {duckdb_message(exc)}"
    return None
