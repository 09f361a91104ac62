"""Event-time windows without Kafka: equal to a DuckDB batch recomputation, whatever the batching,
with events later than the grace period counted and left out."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from archlab.contract import load_contract
from archlab.generators import DirtyRates, make_generator
from archlab.refine import Refiner
from archlab.settings import PROJECT_ROOT
from archlab.windows import PartitionWindows
from tests.gold_truth import differences, gold_key, truth
from tests.unit.test_refine import raw_table

CONTRACTS = PROJECT_ROOT / "contracts"
START = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)


def silver_rows(dataset: str, count: int, seed: int) -> pa.Table:
    contract = load_contract(CONTRACTS / f"{dataset}.yaml")
    generator = make_generator(dataset, seed=seed, start=START, events_per_second=20, dirty=DirtyRates.clean())
    records = generator.batch(count)
    result = Refiner(contract, CONTRACTS).refine(raw_table([r.value for r in records], [r.event_time_ms for r in records]))
    assert result.invalid.num_rows == 0
    return result.valid


def aggregate_in_batches(
    dataset: str, silver: pa.Table, cuts: list[int], watermarks: list[int | None]
) -> tuple[dict, dict[str, int]]:
    """Gold values and late events per aggregate after feeding ``silver`` cut at ``cuts``; before each batch the stream's highest
    event time is reported as the batch's first watermark (as the shuffle stage's markers do)."""
    contract = load_contract(CONTRACTS / f"{dataset}.yaml")
    windows = PartitionWindows(contract, silver_partitions=1)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    late: dict[str, int] = {}
    bounds = [0, *cuts, silver.num_rows]
    for revision, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if watermarks[start] is not None:
            windows.report(0, watermarks[start])
        batch = silver.slice(start, end - start)
        batch = batch.append_column("_watermark", pa.array(watermarks[start:end], pa.int64()))
        outcome = windows.apply(con, batch, revision)
        for name, count in outcome.late.items():
            late[name] = late.get(name, 0) + count
    gold = {gold_key(value, contract): value
            for key, window in windows.windows.items()
            for value in [windows.gold_value(key, window)]}
    return gold, late


@pytest.mark.parametrize("dataset", ["orders", "sensors"])
def test_windows_equal_a_batch_recomputation_whatever_the_batching(dataset: str) -> None:
    silver = silver_rows(dataset, 4_000, seed=5)
    contract = load_contract(CONTRACTS / f"{dataset}.yaml")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("silver", silver)
    expected = truth(con, "silver", contract)
    assert len(expected) > 20
    rng = random.Random(3)
    no_watermark = [None] * silver.num_rows
    one, _ = aggregate_in_batches(dataset, silver, [], no_watermark)
    many, _ = aggregate_in_batches(dataset, silver, sorted(rng.sample(range(1, silver.num_rows), 60)), no_watermark)
    assert differences(expected, one) == []
    assert differences(expected, many) == []


def test_events_later_than_the_grace_period_are_counted_not_aggregated() -> None:
    silver = silver_rows("orders", 2_000, seed=9)
    contract = load_contract(CONTRACTS / "orders.yaml")
    times = [int(t.timestamp() * 1000) for t in silver["event_time"].to_pylist()]
    grace = contract.aggregate("by_category_1m").grace_ms
    # a watermark far ahead for the last 100 rows: their minute windows closed, their hour did not
    ahead = max(times) + grace + 5 * 60_000
    watermarks = [None] * (silver.num_rows - 100) + [ahead] * 100
    gold, late = aggregate_in_batches("orders", silver, [silver.num_rows - 100], watermarks)

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("on_time", silver.slice(0, silver.num_rows - 100))
    con.register("everything", silver)
    expected = {k: v for k, v in truth(con, "on_time", contract).items() if k[0] != "totals_1h"}
    expected |= {k: v for k, v in truth(con, "everything", contract).items() if k[0] == "totals_1h"}
    assert differences(expected, gold) == []
    assert late == {"by_category_1m": 100, "by_country_1m": 100, "totals_1h": 0}
    flagged = sum(v["late_events"] for k, v in gold.items() if k[0] == "by_category_1m")
    assert 0 < flagged <= 100  # late events of a window that exists mark it; the others are only counted
    assert all(v["final"] for k, v in gold.items() if k[0] == "by_category_1m")
    assert not any(v["final"] for k, v in gold.items() if k[0] == "totals_1h")
