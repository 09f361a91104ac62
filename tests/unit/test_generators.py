"""Synthetic event generators: determinism, realism, contract conformance and dirty-data injection.

The checks below deliberately re-implement the contract's type rules and the datasets' value
domains instead of importing them from the generators, so a generator bug cannot hide itself.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from archlab.contract import Contract, load_contract
from archlab.ingest.generators import (
    DIRTY_KINDS,
    DirtyRates,
    GeneratedRecord,
    StreamShape,
    available_datasets,
    make_generator,
)
from tests.unit.expected import ENUMS

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
START = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)  # a Monday morning
MIB = 1024 * 1024
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")

UNIT_OF = {"temperature": "celsius", "humidity": "percent", "pressure": "hpa", "co2": "ppm"}
EURO_COUNTRIES = {"DE", "FR", "NL", "ES", "IT", "BE", "AT", "IE", "PT", "FI"}


def orders_in_range(event: dict[str, Any]) -> bool:
    return event["quantity"] >= 1 and event["unit_price"] > 0


def sensors_in_range(event: dict[str, Any]) -> bool:
    low, high = {"temperature": (-60, 70), "humidity": (0, 100), "pressure": (850, 1100), "co2": (300, 5000)}[
        event["sensor_type"]
    ]
    battery = event["battery_pct"]
    return low <= event["value"] <= high and (battery is None or 0 <= battery <= 100)


IN_RANGE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "orders": orders_in_range,
    "sensors": sensors_in_range,
}


@cache
def contract(dataset: str) -> Contract:
    return load_contract(CONTRACTS / f"{dataset}.yaml")


def epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def has_type(value: Any, type_name: str) -> bool:
    """Whether a parsed JSON value fits a contract type."""
    if isinstance(value, bool):
        return type_name == "bool"
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "int":
        return isinstance(value, int)
    if type_name == "float":
        return isinstance(value, int | float)
    if type_name == "timestamp":
        return isinstance(value, str) and bool(ISO_MS.match(value))
    match = DECIMAL.match(type_name)
    if match:
        precision, scale = int(match[1]), int(match[2])
        return isinstance(value, int | float) and round(value, scale) == value and abs(value) < 10 ** (
            precision - scale
        )
    raise AssertionError(f"test checker does not know type {type_name!r}")


def type_problems(event: dict[str, Any], spec: Contract) -> list[str]:
    """Everything about ``event`` that breaks the contract's fields, types and required flags."""
    problems = [f"unexpected field {name}" for name in event if name not in spec.fields]
    for name, field in spec.fields.items():
        if name not in event or event[name] is None:
            if field.required:
                problems.append(f"{name} missing")
        elif not has_type(event[name], field.type):
            problems.append(f"{name}={event[name]!r} is not {field.type}")
    return problems


def enum_problems(dataset: str, event: dict[str, Any]) -> list[str]:
    return [
        f"{name}={event[name]!r}" for name, allowed in ENUMS[dataset].items() if event[name] not in allowed
    ]


def fully_valid(dataset: str, event: dict[str, Any]) -> bool:
    if type_problems(event, contract(dataset)) or enum_problems(dataset, event):
        return False
    return IN_RANGE[dataset](event)


def kind_of(record: GeneratedRecord) -> str | None:
    headers = dict(record.headers)
    return headers["lab-injected"].decode() if headers else None


def draw(dataset: str, sizes: list[int], seed: int = 7, **kwargs: Any) -> list[GeneratedRecord]:
    gen = make_generator(dataset, seed=seed, start=START, **kwargs)
    return [record for size in sizes for record in gen.batch(size)]


DATASETS = pytest.mark.parametrize("dataset", ["orders", "sensors"])


def test_every_shipped_contract_has_a_generator_and_a_dataset_without_one_is_refused() -> None:
    assert available_datasets() == sorted(path.stem for path in CONTRACTS.glob("*.yaml"))
    assert set(available_datasets()) >= {"orders", "sensors"}
    with pytest.raises(KeyError, match="no contract for dataset 'nope'.*available: .*orders"):
        make_generator("nope", seed=1, start=START)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_generator("orders", seed=1, start=datetime(2025, 1, 1))


def test_dirty_rates_defaults_bounds_and_kinds() -> None:
    assert DIRTY_KINDS == tuple(DirtyRates.model_fields)
    assert len(DIRTY_KINDS) == 10
    total = sum(getattr(DirtyRates(), kind) for kind in DIRTY_KINDS)
    assert 0.03 <= total <= 0.05
    assert all(getattr(DirtyRates.clean(), kind) == 0 for kind in DIRTY_KINDS)
    with pytest.raises(ValidationError):
        DirtyRates(oversized=0.01)  # each one costs over a MiB
    with pytest.raises(ValidationError):
        DirtyRates(late=0.6, duplicate=0.6)


def test_sensors_contract_loads() -> None:
    spec = contract("sensors")
    assert spec.key == ["device_id"]
    assert spec.event_time == "event_time"


@DATASETS
def test_same_arguments_give_same_bytes_whatever_the_batch_sizes(dataset: str) -> None:
    dirty = DirtyRates(duplicate=0.05, late=0.05, malformed_json=0.05, missing_field=0.05)
    whole = draw(dataset, [6000], dirty=dirty)
    assert draw(dataset, [1, 7, 1000, 3, 2500, 1, 2488], dirty=dirty) == whole
    assert draw(dataset, [10] * 10, dirty=dirty) == whole[:100]
    assert len({record.value for record in whole}) > 5000


@DATASETS
def test_different_seeds_give_different_streams(dataset: str) -> None:
    first, second = draw(dataset, [200], seed=1), draw(dataset, [200], seed=2)
    assert sum(a.value == b.value for a, b in zip(first, second, strict=True)) == 0


@DATASETS
def test_clean_events_match_the_contract_and_domains(dataset: str) -> None:
    spec = contract(dataset)
    records = draw(dataset, [5000], dirty=DirtyRates.clean())
    assert all(record.headers == () for record in records)
    for record in records:
        event = orjson.loads(record.value)
        assert type_problems(event, spec) == [], event
        assert enum_problems(dataset, event) == [], event
        assert IN_RANGE[dataset](event), event
        assert record.key == "|".join(str(event[name]) for name in spec.key).encode()
        assert epoch_ms(event[spec.event_time]) == record.event_time_ms


def test_orders_are_realistic() -> None:
    records = draw("orders", [20_000], dirty=DirtyRates.clean())
    events = [orjson.loads(record.value) for record in records]
    lines = defaultdict(list)
    for event in events:
        lines[event["order_id"]].append(event)
        assert re.fullmatch(r"P-\d{5}", event["product_id"])
        assert re.fullmatch(r"C-\d{6}", event["customer_id"])
        expected = {"GB": "GBP", "US": "USD"}.get(event["country"])
        if expected is None:
            expected = "EUR" if event["country"] in EURO_COUNTRIES else "USD"
        assert event["currency"] == expected, event
    assert all(re.search(rb'"unit_price":\d+\.\d\d[,}]', record.value) for record in records)
    sizes = Counter(len(group) for group in lines.values())
    assert set(sizes) == {1, 2, 3, 4} and sizes[1] > sizes[2] > sizes[4]
    for group in lines.values():
        assert len({(e["customer_id"], e["event_time"], e["currency"], e["channel"]) for e in group}) == 1
    quantities = Counter(event["quantity"] for event in events)
    assert quantities[1] / len(events) > 0.5 and max(quantities) > 5
    assert 0.02 < sum(event["coupon_code"] is not None for event in events) / len(events) < 0.2
    assert len({event["country"] for event in events}) >= 8


def test_product_and_customer_popularity_is_skewed() -> None:
    events = [orjson.loads(r.value) for r in draw("orders", [20_000], dirty=DirtyRates.clean())]
    products = sorted(Counter(event["product_id"] for event in events).values(), reverse=True)
    top_tenth = products[: len(products) // 10]
    assert sum(top_tenth) / len(events) > 0.3  # uniform would give about 0.13
    customers = sorted(
        Counter({event["order_id"]: event["customer_id"] for event in events}.values()).values(), reverse=True
    )
    assert sum(customers[:100]) / sum(customers) > 0.07  # uniform over tens of thousands: about 0.025


def test_order_time_is_monotonic_and_seasonal() -> None:
    # 0.15 lines/s covers two days and a bit in ~27k events.
    records = draw("orders", [27_000], events_per_second=0.15)
    clock = [record.event_time_ms for record in records]
    assert clock == sorted(clock)
    clean = [epoch_ms(orjson.loads(r.value)["event_time"]) for r in records if not r.headers]
    assert clean == sorted(clean)
    assert clean[-1] - clean[0] > 2 * DAY_MS
    by_hour = Counter(datetime.fromtimestamp(ms / 1000, UTC).hour for ms in clean)
    night = sum(by_hour[h] for h in range(2, 6))
    evening = sum(by_hour[h] for h in range(18, 22))
    assert evening > 4 * night > 0


def test_a_live_stream_keeps_pace_with_its_rate_at_any_hour() -> None:
    """Without the seasonal profile, n events at r events/s span n / r seconds of event time, even
    at night: a paced live stream's event time then never runs ahead of the wall clock."""
    night = datetime(2025, 3, 3, 3, 0, tzinfo=UTC)
    seasonal = make_generator("orders", seed=5, start=night, events_per_second=1_000, dirty=DirtyRates.clean())
    constant = make_generator("orders", seed=5, start=night, events_per_second=1_000, dirty=DirtyRates.clean(),
                              seasonal=False)
    span_s = {name: (gen.batch(100_000)[-1].event_time_ms - epoch_ms(night.isoformat())) / 1000
              for name, gen in (("seasonal", seasonal), ("constant", constant))}
    assert 95 < span_s["constant"] < 105, span_s
    assert span_s["seasonal"] > 2 * span_s["constant"], span_s  # the night profile: fewer orders per hour


@pytest.mark.parametrize(("span", "count"), [(timedelta(minutes=30), 3_000), (timedelta(days=365), 200_000)])
def test_a_backfill_fills_its_span_and_ends_before_its_end(span: timedelta, count: int) -> None:
    """``until`` makes the rate the mean over the span even through quiet nights (a 30-minute span at
    03:00 once spread over 4.5 hours, into the future), and the stream stops short of the span's end."""
    end = datetime(2025, 3, 3, 3, 30, tzinfo=UTC)
    start = end - span
    gen = make_generator("orders", seed=11, start=start, events_per_second=count / span.total_seconds(),
                         dirty=DirtyRates.clean(), until=end)
    times = [record.event_time_ms for record in gen.batch(count)]
    end_ms, span_ms = int(end.timestamp() * 1000), span.total_seconds() * 1000
    assert times[-1] < end_ms, "a backfill reached past its end"
    assert times[-1] > end_ms - 0.1 * span_ms, "the events fill most of the span"


def test_sensor_devices_keep_their_metadata() -> None:
    events = [orjson.loads(r.value) for r in draw("sensors", [10_000], dirty=DirtyRates.clean())]
    devices: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for event in events:
        devices[event["device_id"]].add((event["site"], event["sensor_type"], event["firmware"]))
        assert event["unit"] == UNIT_OF[event["sensor_type"]]
    assert len(devices) > 100
    assert all(len(metadata) == 1 for metadata in devices.values())
    assert any(event["battery_pct"] is None for event in events)
    temperatures = [event["value"] for event in events if event["sensor_type"] == "temperature"]
    assert len(set(temperatures)) > 100 and -40 < min(temperatures) < max(temperatures) < 60


RATES = {kind: 0.02 for kind in DIRTY_KINDS} | {"oversized": 0.001}


@pytest.fixture(scope="module", params=["orders", "sensors"])
def dirty_stream(request: pytest.FixtureRequest) -> tuple[str, list[GeneratedRecord]]:
    return request.param, draw(request.param, [20_000], seed=11, dirty=DirtyRates(**RATES))


def test_each_dirty_kind_appears_at_about_its_rate(dirty_stream: tuple[str, list[GeneratedRecord]]) -> None:
    _, records = dirty_stream
    counts = Counter(kind_of(record) for record in records)
    assert set(counts) == {None, *DIRTY_KINDS}
    for kind in DIRTY_KINDS:
        expected = len(records) * RATES[kind] / (1 + RATES["duplicate"])
        low, high = (5, 45) if kind == "oversized" else (0.7 * expected, 1.3 * expected)
        assert low <= counts[kind] <= high, (kind, counts[kind], expected)


def test_each_dirty_record_is_broken_as_named(dirty_stream: tuple[str, list[GeneratedRecord]]) -> None:
    dataset, records = dirty_stream
    spec = contract(dataset)
    earlier_clean: dict[bytes, bytes | None] = {}
    seen: Counter[str] = Counter()
    for record in records:
        kind = kind_of(record)
        if kind is None:
            assert fully_valid(dataset, orjson.loads(record.value))
            earlier_clean[record.value] = record.key
            continue
        seen[kind] += 1
        if kind == "duplicate":
            assert record.value in earlier_clean and earlier_clean[record.value] == record.key
        elif kind == "malformed_json":
            record.value.decode("utf-8")
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(record.value)
        elif kind == "non_utf8":
            with pytest.raises(UnicodeDecodeError):
                record.value.decode("utf-8")
        elif kind == "oversized":
            assert len(record.value) > MIB
        else:
            event = orjson.loads(record.value)
            problems = type_problems(event, spec)
            if kind == "missing_field":
                missing = [name for name in spec.fields if spec.fields[name].required and name not in event]
                assert len(missing) == 1 and problems == [f"{missing[0]} missing"]
                assert (record.key is None) == (missing[0] in spec.key)
            elif kind == "wrong_type":
                assert len(problems) == 1 and "is not" in problems[0], problems
            elif kind == "out_of_range":
                assert not problems and not enum_problems(dataset, event) and not IN_RANGE[dataset](event)
            elif kind == "unknown_enum":
                assert not problems and len(enum_problems(dataset, event)) == 1
            else:
                assert kind in {"late", "future"} and fully_valid(dataset, event)
                offset = epoch_ms(event[spec.event_time]) - record.event_time_ms
                if kind == "late":
                    assert -7 * HOUR_MS < offset < -MINUTE_MS
                else:
                    assert offset > DAY_MS
    assert set(seen) == set(DIRTY_KINDS)


def test_missing_field_varies_and_includes_key_and_event_time(
    dirty_stream: tuple[str, list[GeneratedRecord]],
) -> None:
    dataset, records = dirty_stream
    spec = contract(dataset)
    dropped = Counter(
        name
        for record in records
        if kind_of(record) == "missing_field"
        for name in spec.fields
        if name not in orjson.loads(record.value)
    )
    assert dropped[spec.key[0]] > 0 and dropped[spec.event_time] > 0 and len(dropped) >= 4


def test_duplicates_reach_back_minutes() -> None:
    records = draw("orders", [30_000], dirty=DirtyRates(duplicate=0.02))
    first_seen: dict[bytes, int] = {}
    gaps = []
    for record in records:
        if kind_of(record) == "duplicate":
            gaps.append(record.event_time_ms - first_seen[record.value])
        else:
            first_seen.setdefault(record.value, record.event_time_ms)
    assert min(gaps) < 1000 and max(gaps) > 2 * MINUTE_MS


@DATASETS
def test_out_of_order_spread_moves_event_times_back_within_it(dataset: str) -> None:
    spread = 6 * HOUR_MS
    shaped = draw(dataset, [3_000, 7_000], dirty=DirtyRates.clean(), events_per_second=50.0,
                  shape=StreamShape(out_of_order_ms=spread))
    plain = draw(dataset, [10_000], dirty=DirtyRates.clean(), events_per_second=50.0)
    behind = [record.event_time_ms - epoch_ms(orjson.loads(record.value)["event_time"]) for record in shaped]
    assert 0 <= min(behind) and max(behind) <= spread
    assert max(behind) > 0.9 * spread and sum(behind) / len(behind) > 0.4 * spread  # uniform: mean spread / 2
    times = [epoch_ms(orjson.loads(r.value)["event_time"]) for r in shaped]
    assert sum(b < a for a, b in zip(times, times[1:], strict=False)) > len(times) // 4  # no longer in time order
    assert [r.event_time_ms for r in shaped] == [r.event_time_ms for r in plain]  # the clock (pacing) unchanged
    again = draw(dataset, [10_000], dirty=DirtyRates.clean(), events_per_second=50.0,
                 shape=StreamShape(out_of_order_ms=spread))
    assert [r.value for r in again] == [r.value for r in shaped]


def test_cardinality_multiplies_the_distinct_products_and_customers() -> None:
    def distinct(cardinality: float) -> tuple[int, int, int]:
        events = [orjson.loads(r.value) for r in draw("orders", [20_000], dirty=DirtyRates.clean(),
                                                        shape=StreamShape(cardinality=cardinality))]
        return (len({e["product_id"] for e in events}), len({e["customer_id"] for e in events}),
                len({(e["product_id"], e["country"]) for e in events}))

    products, customers, groups = distinct(1.0)
    many_products, many_customers, many_groups = distinct(20.0)
    assert products <= 400 < 4 * products < many_products
    assert many_customers > 1.3 * customers  # bounded by the ~12,000 orders drawn
    assert many_groups > 2.5 * groups  # product x country: nearly one group per line, against ~3,200
    assert distinct(1.0) == (products, customers, groups)  # the default shape leaves the stream as it was


def test_a_default_shape_gives_the_same_bytes_as_none() -> None:
    assert [r.value for r in draw("orders", [2_000], shape=StreamShape())] == [r.value for r in draw("orders", [2_000])]


def test_shape_bounds_and_cardinality_only_where_a_catalogue_scales() -> None:
    with pytest.raises(ValidationError):
        StreamShape(out_of_order_ms=-1)
    with pytest.raises(ValidationError):
        StreamShape(cardinality=0)
    with pytest.raises(ValueError, match="cardinality"):
        make_generator("sensors", seed=1, start=START, shape=StreamShape(cardinality=2))
