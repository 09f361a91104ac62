"""The backfill's library without a stack: what a range becomes (widened to whole windows, clipped to the
stream's final horizon, refused with a message when nothing is left), and that the batch rebuild of raw
records gives the stream's de-duplication and the independent batch truth of gold."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from archlab.batch.gold import BACKFILL_REVISION, gold_tables
from archlab.batch.rebuild import PartitionRebuild
from archlab.batch.span import END_MS, FIRST_MS, BackfillError, Span, bucket_ms, parse_moment, plan_span
from archlab.contract import load_contract
from archlab.core import sql
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators import DirtyRates, make_generator
from archlab.pipeline.silver.refine import RAW_SCHEMA
from archlab.testing.truth import differences, gold_key, truth

CONTRACTS = PROJECT_ROOT / "contracts"
ORDERS = load_contract(CONTRACTS / "orders.yaml")
HOUR = 3_600_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def test_a_range_is_widened_to_whole_buckets_and_clipped_to_the_final_horizon() -> None:
    assert bucket_ms(ORDERS) == HOUR  # 1-minute and 1-hour windows
    assert plan_span(ORDERS, T0 + 90_000, T0 + HOUR + 1, T0 + 10 * HOUR) == Span(T0, T0 + 2 * HOUR)
    assert plan_span(ORDERS, T0, T0 + 5 * HOUR, T0 + 3 * HOUR + 59_000) == Span(T0, T0 + 3 * HOUR)
    assert plan_span(ORDERS, None, None, T0) == Span(FIRST_MS, T0)
    assert plan_span(ORDERS, T0, None, END_MS) == Span(T0, END_MS)


@pytest.mark.parametrize(("start", "end", "horizon", "message"), [
    (T0 + HOUR, T0, T0 + 9 * HOUR, "is not before --to"),
    (T0, T0 + HOUR, None, "no window of 'orders' is final yet"),
    (T0 + 2 * HOUR, None, T0 + 2 * HOUR + 1, "still open in the stream"),
])
def test_a_range_that_leaves_nothing_to_do_is_refused(start: int, end: int | None, horizon: int | None,
                                                       message: str) -> None:
    with pytest.raises(BackfillError, match=message):
        plan_span(ORDERS, start, end, horizon)


def test_moments_are_iso_8601_and_utc_by_default() -> None:
    assert parse_moment("2026-03-01T00:00", "--from") == T0 == parse_moment("2026-03-01T01:00+01:00", "--from")
    with pytest.raises(BackfillError, match="--to 'soon' is not an ISO-8601 time"):
        parse_moment("soon", "--to")


def _raw(count: int) -> pa.Table:
    """Generated orders with every dirty kind, as Kafka would number them on one partition."""
    generator = make_generator("orders", seed=3, start=datetime.fromtimestamp(T0 / 1000, UTC),
                               events_per_second=2.0, dirty=DirtyRates(), contracts_dir=CONTRACTS)
    records = generator.batch(count)
    return pa.Table.from_arrays([
        pa.array([0] * len(records), pa.int32()),
        pa.array(range(len(records)), pa.int64()),
        pa.array([r.key for r in records], pa.binary()),
        pa.array([r.value for r in records], pa.binary()),
        pa.array([r.event_time_ms + 1_000 for r in records], pa.timestamp("ms", tz="UTC")),
    ], schema=RAW_SCHEMA)


def test_the_rebuild_keeps_the_first_of_duplicates_and_gold_equals_the_batch_truth() -> None:
    raw = _raw(6_000)
    everything = PartitionRebuild(ORDERS, CONTRACTS, Span(FIRST_MS, END_MS))
    pieces = [everything.chunk(raw.slice(offset, 1_000)) for offset in range(0, raw.num_rows, 1_000)]
    silver = pa.concat_tables([p.silver for p in pieces])
    quarantine = pa.concat_tables([p.quarantine for p in pieces])
    ids = silver["event_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a duplicate passed"
    assert silver.num_rows + quarantine.num_rows < raw.num_rows, "the generator's duplicates were not dropped"
    first = {}
    for event_id, offset in zip(ids, silver["_source_offset"].to_pylist(), strict=True):
        first.setdefault(event_id, offset)
    assert all(first[e] == o for e, o in zip(ids, silver["_source_offset"].to_pylist(), strict=True))

    gold = gold_tables(ORDERS, silver)
    rows = [row for table in gold.values() for row in table.to_pylist()]
    assert rows and all(row["final"] and row["revision"] == BACKFILL_REVISION and row["late_events"] == 0
                        for row in rows)
    con = sql.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("silver", silver)
    assert differences(truth(con, "silver", ORDERS), {gold_key(row, ORDERS): row for row in rows}) == []


def test_a_range_keeps_its_own_rows_but_dedups_against_the_records_before_it() -> None:
    raw = _raw(3_000)
    middle = Span(T0 + 10 * 60_000, T0 + 20 * 60_000)
    whole = PartitionRebuild(ORDERS, CONTRACTS, Span(FIRST_MS, END_MS)).chunk(raw).silver
    ranged = PartitionRebuild(ORDERS, CONTRACTS, middle).chunk(raw)
    stamps = pc.cast(pc.cast(whole[ORDERS.event_time], pa.timestamp("ms", tz="UTC")), pa.int64()).to_pylist()
    inside = whole.filter(pa.array([middle.holds(ms) for ms in stamps]))
    assert ranged.silver.num_rows and ranged.silver.equals(inside)
    settled = set(zip(ranged.settled["source_partition"].to_pylist(), ranged.settled["source_offset"].to_pylist()))
    kept = set(zip(ranged.silver["_source_partition"].to_pylist(), ranged.silver["_source_offset"].to_pylist()))
    assert kept <= settled, "a record in silver must also leave the quarantine"
