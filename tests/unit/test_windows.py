"""Event-time windows without Kafka: equal to a DuckDB batch recomputation, whatever the batching,
with events later than the grace period counted and left out."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest
import yaml

from archlab.contract import Contract, load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators import DirtyRates, make_generator
from archlab.kafka.clients import partition_for
from archlab.pipeline.gold.stages import bucket_ms, event_ms
from archlab.pipeline.gold.windows import PartitionWindows, iso_ms
from archlab.pipeline.silver.refine import Refiner
from archlab.pipeline.wire import from_wire_json, silver_json
from archlab.testing.truth import differences, gold_key, truth
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


def test_shuffled_stream_with_markers_equals_the_batch_truth_when_windows_close_and_are_forgotten() -> None:
    """The gold_aggregator's two stages played offline: silver partitions read in random chunks,
    re-keyed by hour bucket with a watermark marker per chunk, then aggregated per shuffle
    partition in random batches. Windows close and are forgotten on the way (a batch may both
    update a window and move the watermark past its retention); the last gold value of every key
    still equals the batch truth."""
    contract = load_contract(CONTRACTS / "orders.yaml")
    generator = make_generator("orders", seed=51, start=START, events_per_second=2.0, dirty=DirtyRates.clean())
    records = generator.batch(12_000)  # about 100 minutes of event time
    silver = Refiner(contract, CONTRACTS).refine(
        raw_table([r.value for r in records], [r.event_time_ms for r in records])).valid
    values = silver_json(silver)
    partitions = [partition_for(key.encode(), 4) for key in silver["order_id"].to_pylist()]
    by_partition = {p: [v for v, q in zip(values, partitions, strict=True) if q == p] for p in range(4)}
    rng = random.Random(7)
    size = bucket_ms(contract)
    shuffled: dict[int, list[tuple[str, object]]] = {q: [] for q in range(4)}
    read = dict.fromkeys(range(4), 0)
    while any(read[p] < len(by_partition[p]) for p in range(4)):
        for p in rng.sample(range(4), rng.randint(1, 4)):
            chunk = by_partition[p][read[p]:read[p] + rng.randint(300, 3_000)]
            read[p] += len(chunk)
            if not chunk:
                continue
            times = event_ms(chunk, contract)
            for value, ms in zip(chunk, times.tolist(), strict=True):
                shuffled[partition_for(iso_ms(ms // size * size).encode(), 4)].append(("event", value))
            for q in range(4):
                shuffled[q].append(("marker", (p, int(times.max()))))

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    gold: dict = {}
    forgotten = 0
    for stream in shuffled.values():
        windows = PartitionWindows(contract, silver_partitions=4)
        start = 0
        while start < len(stream):
            batch = stream[start:start + rng.randint(500, 15_000)]
            start += len(batch)
            rows, marks, watermark = [], [], windows.watermark()
            for kind, item in batch:
                if kind == "marker":
                    watermark = windows.report(*item)  # type: ignore[misc]
                else:
                    rows.append(item)
                    marks.append(watermark)
            table = from_wire_json(rows, contract.gold_inputs, other_fields="ignore")  # as the aggregator reads
            table = table.append_column("_watermark", pa.array(marks, pa.int64()))
            outcome = windows.apply(con, table, revision=start)
            assert sum(outcome.late.values()) == 0
            forgotten += len(outcome.dropped)
            for key, (window, _) in outcome.touched.items():
                value = windows.gold_value(key, window)
                gold[gold_key(value, contract)] = value
    con.register("silver", silver)
    assert forgotten > 0
    assert differences(truth(con, "silver", contract), gold) == []


def test_a_window_opened_after_the_last_closing_pass_still_closes_on_time() -> None:
    """Closing passes are skipped until the earliest window is due; an out-of-order batch that
    opens an earlier window must bring that moment forward."""
    contract = load_contract(CONTRACTS / "orders.yaml")
    silver = silver_rows("orders", 2_000, seed=9)
    minutes = [int(t.timestamp() * 1000) // 60_000 for t in silver["event_time"].to_pylist()]
    first = min(minutes)
    earlier = silver.filter(pa.array([m == first for m in minutes]))
    later = silver.filter(pa.array([m == first + 1 for m in minutes]))
    assert earlier.num_rows and later.num_rows
    grace = contract.aggregate("by_category_1m").grace_ms
    windows = PartitionWindows(contract, silver_partitions=1)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def apply(batch: pa.Table, watermark: int, revision: int) -> None:
        windows.report(0, watermark)
        windows.apply(con, batch.append_column("_watermark", pa.array([watermark] * batch.num_rows, pa.int64())), revision)

    apply(later, (first + 2) * 60_000 - 1, revision=1)  # a closing pass: the later minute is due first
    apply(earlier, (first + 2) * 60_000 - 1, revision=2)  # within the grace period: opens earlier windows
    # the earlier minute's windows are due, the later minute's are not
    apply(silver.slice(0, 0), (first + 1) * 60_000 + grace + 30_000, revision=3)
    finals = {key[1] // 60_000: window.final for key, window in windows.windows.items() if key[0] == "by_category_1m"}
    assert finals and set(finals) == {first, first + 1}
    assert all(final for minute, final in finals.items() if minute == first)
    assert not any(final for minute, final in finals.items() if minute == first + 1)


def test_a_distinct_count_of_an_optional_field_is_zero_while_no_event_has_it() -> None:
    """``list(…) FILTER (… IS NOT NULL)`` over no row is NULL, not an empty list."""
    raw = yaml.safe_load((CONTRACTS / "orders.yaml").read_text())
    raw["aggregates"] = [{"name": "coupons_1m", "window": "1m", "grace": "10m",
                          "measures": [{"name": "coupons", "fn": "count_distinct", "field": "coupon_code"},
                                       {"name": "lines", "fn": "count"}]}]
    contract = Contract.model_validate(raw)
    silver = silver_rows("orders", 400, seed=4)
    coupons = silver["coupon_code"].to_pylist()
    without, with_coupon = (silver.filter(pa.array([(c is None) == wanted for c in coupons])) for wanted in (True, False))
    assert without.num_rows and with_coupon.num_rows
    windows = PartitionWindows(contract, silver_partitions=1)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for revision, batch in enumerate((without, with_coupon)):
        windows.apply(con, batch.append_column("_watermark", pa.nulls(batch.num_rows, pa.int64())), revision)
        if revision == 0:
            assert {windows.gold_value(k, w)["coupons"] for k, w in windows.windows.items()} == {0}
    counted = sum(windows.gold_value(k, w)["lines"] for k, w in windows.windows.items())
    distinct = sum(windows.gold_value(k, w)["coupons"] for k, w in windows.windows.items())
    assert counted == silver.num_rows
    expected = {(iso_ms(int(t.timestamp() * 1000) // 60_000 * 60_000), c) for t, c in
                zip(with_coupon["event_time"].to_pylist(), with_coupon["coupon_code"].to_pylist(), strict=True)}
    assert distinct == len(expected)
