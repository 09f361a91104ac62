"""The API's read queries. Every one is DuckDB SQL whose identifiers come from the contract and whose
values are bound parameters: nothing a request sends is pasted into SQL."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from archlab.contract import Aggregate, Contract, Measure, quote
from archlab.serving.api.store import KEY_COLUMN, SQL, GoldView, iso, json_value

ADDITIVE = ("count", "sum", "count_if")
"""Measures whose value over several groups is the sum of the groups' values."""


class BadCursor(ValueError):
    """A pagination cursor this API did not hand out."""


@dataclass(frozen=True)
class TimeRange:
    """Half-open ``[start, end)`` on window start (or arrival time); None is unbounded."""

    start: datetime | None
    end: datetime | None


def encode_cursor(window_start_ms: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([window_start_ms, key])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        millis, key = orjson.loads(raw)
        if not isinstance(millis, int) or not isinstance(key, str):
            raise TypeError
        return datetime.fromtimestamp(millis / 1000, tz=UTC), key
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise BadCursor("not a cursor returned by this endpoint") from exc


def windows(
    dataset: str, aggregate: Aggregate, table: pa.Table | None, period: TimeRange, filters: dict[str, str], limit: int,
    cursor: str | None, as_of_version: int | None = None,
) -> dict[str, Any]:
    """A page of windows of ``table`` (a snapshot's, or an ``as_of`` version's: one row per key), ordered
    by window start then dimension values."""
    result: dict[str, Any] = {"dataset": dataset, "aggregate": aggregate.name, "dimensions": list(aggregate.group_by),
                              "measures": [m.name for m in aggregate.measures], "as_of_version": as_of_version,
                              "items": [], "next_cursor": None}
    if table is None or table.num_rows == 0:
        return result
    where, params = range_filter("window_start", period)
    for dimension, value in filters.items():
        where.append(f"CAST({quote(dimension)} AS VARCHAR) = ?")
        params.append(value)
    if cursor is not None:
        after, key = decode_cursor(cursor)
        where.append(f"(window_start > ? OR (window_start = ? AND {KEY_COLUMN} > ?))")
        params += [after, after, key]
    schema = table.schema
    measures = [m.name for m in aggregate.measures]
    select = [iso("window_start"), iso("window_end"),
              *(json_value(c, schema.field(c).type) for c in [*aggregate.group_by, *measures]),
              "events", "late_events", "final", "revision", iso("watermark"),
              "epoch_ms(window_start)", KEY_COLUMN]
    page = (f"SELECT {', '.join(select)} FROM snap {where_clause(where)} "
            f"ORDER BY window_start, {KEY_COLUMN} LIMIT ?")
    rows = SQL.query(page, [*params, limit + 1], snap=table)
    dims, n_dims = aggregate.group_by, len(aggregate.group_by)
    items = []
    for row in rows[:limit]:
        values = row[2:2 + n_dims + len(measures)]
        rest = row[2 + n_dims + len(measures):]
        items.append({
            "window_start": row[0], "window_end": row[1],
            "dimensions": dict(zip(dims, values[:n_dims], strict=True)),
            "measures": dict(zip(measures, values[n_dims:], strict=True)),
            "events": rest[0], "late_events": rest[1], "final": rest[2], "revision": rest[3], "watermark": rest[4],
        })
    result["items"] = items
    if len(rows) > limit:
        last = rows[limit - 1]
        result["next_cursor"] = encode_cursor(last[-2], last[-1])
    return result


def range_filter(column: str, period: TimeRange) -> tuple[list[str], list[Any]]:
    """SQL conditions (with their parameters) keeping ``column`` inside ``period``."""
    where, params = [], []
    if period.start is not None:
        where.append(f"{quote(column)} >= ?")
        params.append(period.start)
    if period.end is not None:
        where.append(f"{quote(column)} < ?")
        params.append(period.end)
    return where, params


def where_clause(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


# ---------------------------------------------------------------------------------------------- KPIs
def headline_aggregate(contract: Contract, window: timedelta) -> Aggregate | None:
    """The aggregate of this window size with the fewest dimensions (its figures need the least combining)."""
    candidates = [a for a in contract.aggregates if a.window == window]
    return min(candidates, key=lambda a: len(a.group_by)) if candidates else None


def headline_measures(aggregate: Aggregate) -> list[Measure]:
    """Measures that can be told for the whole dataset from this aggregate: all of them when it has no
    dimensions; otherwise only those whose groups combine exactly (sums, counts, min, max)."""
    if not aggregate.group_by:
        return list(aggregate.measures)
    return [m for m in aggregate.measures if m.fn in (*ADDITIVE, "min", "max")]


def _combine(measure: Measure, grouped: bool) -> str:
    column = quote(measure.name)
    if not grouped:
        return f"any_value({column})"
    return {"min": f"min({column})", "max": f"max({column})"}.get(measure.fn, f"sum({column})")


def kpis(view: GoldView) -> dict[str, Any]:
    """Headline figures of the latest minute and hour windows in the data, against the window before.

    "Latest" is the newest window present, not the wall clock: replayed historical data has KPIs too.
    """
    periods = []
    for label, window in (("minute", timedelta(minutes=1)), ("hour", timedelta(hours=1))):
        aggregate = headline_aggregate(view.contract, window)
        if aggregate is None:
            continue
        periods.append(_period(view, label, aggregate))
    return {"dataset": view.contract.dataset, "periods": periods}


def _period(view: GoldView, label: str, aggregate: Aggregate) -> dict[str, Any]:
    """The newest window against the one before it (``figures``: the newest may have just opened), and
    the newest complete window against the one before it (``complete``: like with like). A window is
    complete once it is final, or once a newer window exists (event time has passed its end)."""
    measures = headline_measures(aggregate)
    out: dict[str, Any] = {"period": label, "aggregate": aggregate.name, "window_start": None, "window_end": None,
                           "previous_window_start": None, "final": None, "figures": [], "complete": None}
    table = view.snapshot.table(aggregate.name)
    if table is None or table.num_rows == 0:
        return out
    grouped = bool(aggregate.group_by)
    combined = [f"{_combine(m, grouped)} AS {quote(m.name)}" for m in measures]
    # The three newest windows, adjacent or not: the newest complete one may lie before a gap in the events.
    sql = (f"WITH newest AS (SELECT DISTINCT window_start AS ws FROM snap ORDER BY ws DESC LIMIT 3) "
           f"SELECT window_start, {iso('window_start')}, {iso('window_end')}, bool_and(final), sum(events) AS events, "
           f"{', '.join(combined)} FROM snap WHERE window_start IN (SELECT ws FROM newest) "
           f"GROUP BY window_start, window_end ORDER BY window_start DESC")
    rows = SQL.query(sql, [], snap=table)
    by_start = {r[0]: r for r in rows}
    names = ["events", *(m.name for m in measures)]

    def compared(current: tuple[Any, ...], previous: tuple[Any, ...] | None) -> list[dict[str, Any]]:
        return [_figure(name, current[4 + i], previous[4 + i] if previous else None) for i, name in enumerate(names)]

    current = rows[0]
    previous = by_start.get(current[0] - aggregate.window)
    out.update(window_start=current[1], window_end=current[2], final=current[3],
               previous_window_start=previous[1] if previous else None, figures=compared(current, previous))
    complete = current if current[3] else (rows[1] if len(rows) > 1 else None)  # a newer window exists
    if complete is not None:
        before = by_start.get(complete[0] - aggregate.window)
        out["complete"] = {"window_start": complete[1], "window_end": complete[2],
                           "previous_window_start": before[1] if before else None,
                           "figures": compared(complete, before)}
    return out


def _figure(name: str, value: Any, previous: Any) -> dict[str, Any]:
    change = None if value is None or previous is None else value - previous
    pct = None
    if change is not None and previous:
        pct = round(float(change) / abs(float(previous)) * 100, 2)
    return {"name": name, "value": _jsonable(value), "previous": _jsonable(previous), "change": _jsonable(change),
            "change_pct": pct}


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value
