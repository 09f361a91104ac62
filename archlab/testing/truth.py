"""The batch truth of gold: every aggregate recomputed by one DuckDB query over silver rows,
written independently of the aggregator (DuckDB's own aggregate functions and time buckets), and
a comparison that names every window and group that differs. Used by the tests and by the chaos
harness (``python -m bench chaos``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb

from archlab.contract import Aggregate, Contract, quote

Key = tuple[str, int, tuple[Any, ...]]


def _expression(measure: Any) -> str:
    column = quote(measure.field) if measure.field else "*"
    return {
        "count": f"count({column})",
        "count_distinct": f"count(DISTINCT {column})",
        "sum": f"sum({column})",
        "avg": f"avg({column})",
        "min": f"min({column})",
        "max": f"max({column})",
        # not DuckDB's count_if: it answers NULL, not 0, when the condition is NULL on every row
        "count_if": f"count(*) FILTER (WHERE ({measure.condition}))",
    }[measure.fn]


def truth(con: duckdb.DuckDBPyConnection, source: str, contract: Contract) -> dict[Key, dict[str, Any]]:
    """Every (aggregate, window start ms, dimensions) -> measures, over the silver rows in ``source``."""
    out: dict[Key, dict[str, Any]] = {}
    for aggregate in contract.aggregates:
        out.update(_one(con, source, contract, aggregate))
    return out


def _one(con: duckdb.DuckDBPyConnection, source: str, contract: Contract, aggregate: Aggregate) -> dict[Key, dict]:
    direct = [m for m in aggregate.measures if m.fn != "ratio"]
    dims = [quote(d) for d in aggregate.group_by]
    bucket = (f"time_bucket(INTERVAL '{aggregate.window_ms} milliseconds', {quote(contract.event_time)}, "
              f"TIMESTAMPTZ '1970-01-01 00:00:00+00')")
    select = ", ".join([f"{bucket} AS w", *dims, *(_expression(m) for m in direct)])
    rows = con.execute(f"SELECT {select} FROM {source} GROUP BY ALL").fetchall()
    out = {}
    for row in rows:
        start = int(row[0].astimezone(UTC).timestamp() * 1000)
        values = dict(zip([m.name for m in direct], row[1 + len(dims):], strict=True))
        for m in aggregate.measures:
            if m.fn == "ratio":
                numerator, denominator = (values[name] for name in m.of)
                values[m.name] = float(numerator) / float(denominator) if numerator is not None and denominator else None
        out[(aggregate.name, start, tuple(row[1 : 1 + len(dims)]))] = values
    return out


def gold_key(row: dict[str, Any], contract: Contract) -> Key:
    aggregate = contract.aggregate(row["aggregate"])
    start = row["window_start"]
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return (aggregate.name, int(start.timestamp() * 1000), tuple(row[d] for d in aggregate.group_by))


def differences(expected: dict[Key, dict[str, Any]], gold: dict[Key, dict[str, Any]]) -> list[str]:
    """Human-readable differences; empty when gold equals the truth (floats within 1e-9 relative)."""
    problems = [f"missing in gold: {key}" for key in sorted(expected.keys() - gold.keys(), key=str)]
    problems += [f"not in the truth: {key} {gold[key]}" for key in sorted(gold.keys() - expected.keys(), key=str)]
    for key in expected.keys() & gold.keys():
        for name, want in expected[key].items():
            got = gold[key].get(name)
            if not _equal(want, got):
                problems.append(f"{key} {name}: gold {got!r}, truth {want!r}")
    return sorted(problems)


def _equal(want: Any, got: Any) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(float(want), float(got), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, Decimal):
        return want == Decimal(str(got))
    return want == got
