"""What a backfill's time range means, and how a requested range becomes the one that is rebuilt.

One range ``[start, end)`` in event time is rebuilt in every table, each by its own column:

- silver: rows whose event time lies in the range;
- quarantine: rows whose raw record's event time lies in it, as far as the contract could read that time
  (the arrival time of a record whose event time is unreadable);
- gold: windows whose start lies in it.

The range is widened to whole *time buckets* (the least common multiple of the aggregates' window sizes,
as the stream's shuffle uses), so that every window lies wholly inside or outside it; and its end is
clipped to the stream's *final horizon*: the earliest moment, over the aggregates, at which the gold
watermark minus the grace period stands. Windows that end after it are still open in the stream, which
keeps updating them; the backfill leaves them to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.compute as pc

from archlab.contract import Contract
from archlab.core import names
from archlab.core.errors import UserError
from archlab.lake.store import CALENDAR_SECONDS
from archlab.lake.tables import Tables

FIRST_MS, END_MS = CALENDAR_SECONDS[0] * 1000, CALENDAR_SECONDS[1] * 1000


class BackfillError(UserError):
    """A backfill that cannot run as asked: the message says why and what to do."""

    label = "backfill refused"


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open range of event time, ``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def holds(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms

    def describe(self) -> str:
        return f"[{iso(self.start_ms)}, {iso(self.end_ms)})"


def iso(ms: int) -> str:
    """An instant as ISO-8601 UTC with ``Z`` (also as a SQL literal a Delta predicate compares with)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_moment(text: str, option: str) -> int:
    """``--from``/``--to`` as epoch ms: ISO-8601, UTC when no offset is given."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BackfillError(f"{option} {text!r} is not an ISO-8601 time (e.g. 2026-01-31T14:00Z)") from exc
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def bucket_ms(contract: Contract) -> int:
    """The unit a range is widened to: whole windows of every aggregate (1 ms without aggregates)."""
    return math.lcm(*(a.window_ms for a in contract.aggregates)) if contract.aggregates else 1


def final_horizon(tables: Tables, contract: Contract) -> int | None:
    """Epoch ms before which every window of every aggregate is final in the stream: per aggregate its gold
    table's highest watermark minus the grace period, the earliest of them. None when some aggregate has
    no watermark yet (nothing final); ``END_MS`` for a contract without aggregates."""
    horizon = END_MS
    for aggregate in contract.aggregates:
        marks = tables.read(names.table_path("gold", contract.dataset, aggregate.name), ["watermark"])
        highest = None if marks is None or not marks.num_rows else pc.max(marks["watermark"]).as_py()
        if highest is None:
            return None
        horizon = min(horizon, int(highest.timestamp() * 1000) - aggregate.grace_ms)
    return horizon


def plan_span(contract: Contract, start_ms: int | None, end_ms: int | None, horizon_ms: int | None) -> Span:
    """The range to rebuild: the one asked (default: all of history) widened to whole buckets, its end
    clipped to the final horizon; :class:`BackfillError` when that leaves nothing."""
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise BackfillError(f"--from {iso(start_ms)} is not before --to {iso(end_ms)}")
    if horizon_ms is None:
        raise BackfillError(f"no window of {contract.dataset!r} is final yet (its gold tables have no watermark): "
                            "the stream has not finalised anything a backfill could replace; let it run")
    bucket = bucket_ms(contract)
    start = FIRST_MS if start_ms is None else start_ms // bucket * bucket
    end = END_MS if end_ms is None else -(-end_ms // bucket) * bucket
    final_end = horizon_ms // bucket * bucket
    end = min(end, final_end)
    if end <= start:
        raise BackfillError(f"nothing to backfill from {iso(start)}: windows from {iso(final_end)} on are still "
                            "open in the stream (its watermark minus the grace period), and the backfill leaves "
                            "open windows to the stream; choose an earlier range or wait")
    return Span(max(start, FIRST_MS), min(end, END_MS))
