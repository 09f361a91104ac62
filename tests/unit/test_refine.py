"""The refine engine: dirty records land in quarantine with the right reasons, clean ones in silver, typed.

Expected values are computed here independently, from the generators' JSON and the reference CSV
files read with the csv module. Only this test reads the ``lab-injected`` header, to know which
dirty kind a record is meant to be.
"""

from __future__ import annotations

import base64
import csv
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Any

import orjson
import pyarrow as pa
import pytest

from archlab.contract import Contract, load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators import (
    DIRTY_KINDS,
    INJECTED_HEADER,
    DirtyRates,
    GeneratedRecord,
    make_generator,
)
from archlab.pipeline.silver.checks import TRUNCATED_PAYLOAD_BYTES
from archlab.pipeline.silver.refine import RAW_SCHEMA, Refiner, RefineResult, RuleOutcome
from archlab.pipeline.wire import (
    QUARANTINE_SCHEMA,
    quarantine_from_json,
    quarantine_json,
    silver_from_json,
    silver_json,
)
from tests.unit.expected import ENUMS

CONTRACTS = PROJECT_ROOT / "contracts"
START = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)
PARTITION, FIRST_OFFSET = 3, 1000
ARRIVAL = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
DIRTY = DirtyRates(**({kind: 0.03 for kind in DIRTY_KINDS} | {"oversized": 0.001}))
SENSOR_RANGES = {"temperature": (-60, 70), "humidity": (0, 100), "pressure": (850, 1100), "co2": (300, 5000)}
# A reason that necessarily comes with another: an unknown currency has no euro rate, an unknown unit
# cannot match its sensor type.
COMPANIONS = {"currency.allowed": {"currency_has_fx_rate"}, "unit.allowed": {"unit_matches_sensor_type"}}


@cache
def contract(dataset: str) -> Contract:
    return load_contract(CONTRACTS / f"{dataset}.yaml")


@cache
def refiner(dataset: str) -> Refiner:
    return Refiner(contract(dataset), CONTRACTS)


def raw_table(values: Sequence[bytes | None], kafka_ms: Sequence[int] | None = None) -> pa.Table:
    """A raw batch as the silver refiner builds it from Kafka records, on partition 3 from offset 1000."""
    arrival = int(ARRIVAL.timestamp() * 1000)
    return pa.Table.from_pydict(
        {
            "partition": [PARTITION] * len(values),
            "offset": list(range(FIRST_OFFSET, FIRST_OFFSET + len(values))),
            "key": [None] * len(values),
            "value": list(values),
            "kafka_timestamp": list(kafka_ms) if kafka_ms is not None else [arrival] * len(values),
        },
        schema=RAW_SCHEMA,
    )


def refine_records(dataset: str, records: list[GeneratedRecord]) -> RefineResult:
    """Refine generated records; each record's Kafka timestamp is the moment the producer sent it."""
    return refiner(dataset).refine(raw_table([r.value for r in records], [r.event_time_ms for r in records]))


def kind_of(record: GeneratedRecord) -> str | None:
    headers = dict(record.headers)
    return headers[INJECTED_HEADER].decode() if INJECTED_HEADER in headers else None


def as_decimal(value: Any) -> Decimal:
    return Decimal(str(value))


@cache
def reference(name: str) -> dict[str, dict[str, str]]:
    """A reference CSV as {first column value: row}."""
    with (CONTRACTS / "reference" / f"{name}.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    first = next(iter(rows[0]))
    return {row[first]: row for row in rows}


def expected_check(dataset: str, kind: str, record: GeneratedRecord) -> str:
    """The check a dirty record must fail, worked out from its JSON alone."""
    if kind in ("malformed_json", "non_utf8", "oversized"):
        return {"malformed_json": "json", "non_utf8": "utf8", "oversized": "size"}[kind]
    if kind == "future":
        return "event_not_in_future"
    event = orjson.loads(record.value)
    spec = contract(dataset)
    if kind == "missing_field":
        (missing,) = [name for name, field in spec.fields.items() if field.required and name not in event]
        return f"{missing}.required"
    if kind == "wrong_type":
        textual = ("string", "timestamp")
        (wrong,) = [
            name
            for name, value in event.items()
            if isinstance(value, str) and spec.fields[name].type not in textual
        ]
        return f"{wrong}.type"
    if kind == "unknown_enum":
        (unknown,) = [name for name, allowed in ENUMS[dataset].items() if event[name] not in allowed]
        return f"{unknown}.allowed"
    assert kind == "out_of_range", kind
    if dataset == "orders":
        return "quantity.min" if event["quantity"] < 1 else "unit_price.min"
    battery = event["battery_pct"]
    if battery is not None and not 0 <= battery <= 100:
        return "battery_pct.min" if battery < 0 else "battery_pct.max"
    low, high = SENSOR_RANGES[event["sensor_type"]]
    assert not low <= event["value"] <= high
    return f"{event['sensor_type']}_in_range"


@pytest.fixture(scope="module", params=["orders", "sensors"])
def dirty(request: pytest.FixtureRequest) -> tuple[str, list[GeneratedRecord], RefineResult]:
    records = make_generator(request.param, seed=5, start=START, dirty=DIRTY).batch(8000)
    return request.param, records, refine_records(request.param, records)


def test_every_dirty_kind_lands_in_quarantine_with_its_reason(
    dirty: tuple[str, list[GeneratedRecord], RefineResult],
) -> None:
    dataset, records, result = dirty
    quarantined = {row["source_offset"] - FIRST_OFFSET: row for row in result.invalid.to_pylist()}
    silver = {offset - FIRST_OFFSET for offset in result.valid["_source_offset"].to_pylist()}
    assert len(quarantined) + len(silver) == len(records) and not quarantined.keys() & silver
    landed: Counter[str] = Counter()
    for index, record in enumerate(records):
        kind = kind_of(record)
        if kind in (None, "duplicate", "late"):  # valid events; de-duplication is the service's job
            assert index in silver, (kind, quarantined.get(index))
            continue
        row = quarantined[index]
        checks = [reason["check"] for reason in row["reasons"]]
        expected = expected_check(dataset, kind, record)
        assert checks[0] == expected and set(checks) <= {expected, *COMPANIONS.get(expected, ())}, (kind, row)
        assert all(reason["message"] for reason in row["reasons"])
        assert row["dataset"] == dataset and row["source_partition"] == PARTITION
        landed[kind] += 1
    assert set(landed) == set(DIRTY_KINDS) - {"duplicate", "late"}


def test_quarantine_keeps_the_payload_readable(
    dirty: tuple[str, list[GeneratedRecord], RefineResult],
) -> None:
    _, records, result = dirty
    seen = set()
    for row in result.invalid.to_pylist():
        record = records[row["source_offset"] - FIRST_OFFSET]
        kind = kind_of(record)
        seen.add(kind)
        if kind == "non_utf8":
            assert row["payload_encoding"] == "base64"
            assert base64.b64decode(row["payload"]) == record.value
        elif kind == "oversized":
            assert row["payload_encoding"] == "utf-8"
            assert row["payload"].encode() == record.value[:TRUNCATED_PAYLOAD_BYTES]
            assert f"payload is {len(record.value)} bytes" in row["reasons"][0]["message"]
        else:
            assert row["payload_encoding"] == "utf-8" and row["payload"].encode() == record.value
    assert {"non_utf8", "oversized", "malformed_json"} <= seen


def test_a_payload_that_escaping_would_swell_past_the_topic_limit_is_cut() -> None:
    """Control bytes escape to six characters each: 1 MiB of them must not make a 6 MiB record."""
    swelling = b"\x01" * (1024 * 1024 - 10)
    result = refiner("orders").refine(raw_table([swelling, b"not json"]))
    payloads = result.invalid["payload"].to_pylist()
    assert payloads[0].encode() == swelling[:TRUNCATED_PAYLOAD_BYTES]
    assert payloads[1] == "not json"  # a short payload is kept whole
    assert all(len(record) < 4 * 1024 * 1024 for record in quarantine_json(result.invalid))


def test_rule_counts_add_up(dirty: tuple[str, list[GeneratedRecord], RefineResult]) -> None:
    dataset, records, result = dirty
    quarantined_reasons = Counter(
        reason["check"] for row in result.invalid.to_pylist() for reason in row["reasons"]
    )
    assert result.rules["size"].passed + result.rules["size"].failed == len(records)
    for name, outcome in result.rules.items():
        assert outcome.failed == quarantined_reasons[name], name
    parsed = result.rules["json"].passed
    assert result.rules["event_not_in_future"].passed + result.rules["event_not_in_future"].failed <= parsed
    warn_rules = {rule.name for rule in contract(dataset).rules if rule.action == "warn"}
    for name, outcome in result.rules.items():  # a warn rule never quarantines, the others never warn
        assert (outcome.failed if name in warn_rules else outcome.warned) == 0, name


def test_valid_orders_are_typed_and_derived_values_match_plain_python() -> None:
    records = make_generator("orders", seed=2, start=START, dirty=DirtyRates.clean()).batch(3000)
    result = refine_records("orders", records)
    assert result.invalid.num_rows == 0
    assert result.valid.schema.equals(contract("orders").silver_schema)
    rates = {currency: Decimal(row["rate_to_eur"]) for currency, row in reference("fx_rates").items()}
    for index, (record, row) in enumerate(zip(records, result.valid.to_pylist(), strict=True)):
        event = orjson.loads(record.value)
        assert row["event_time"] == datetime.fromisoformat(event["event_time"])
        for name in (
            "event_id",
            "order_id",
            "customer_id",
            "product_id",
            "category",
            "quantity",
            "currency",
            "country",
            "payment_method",
            "channel",
            "coupon_code",
        ):
            assert row[name] == event[name], name
        price = as_decimal(event["unit_price"])
        assert row["unit_price"] == price
        amount = event["quantity"] * price
        assert row["amount"] == amount
        assert row["fx_rate_to_eur"] == rates[event["currency"]]
        assert row["amount_eur"] == (amount * rates[event["currency"]]).quantize(
            Decimal("0.01"), ROUND_HALF_UP
        )
        assert row["_source_partition"] == PARTITION and row["_source_offset"] == FIRST_OFFSET + index
        assert row["_kafka_timestamp"] == datetime.fromtimestamp(record.event_time_ms / 1000, UTC)
        assert row["_contract_version"] == contract("orders").version


def test_valid_sensor_readings_are_enriched_from_the_reference_tables() -> None:
    records = make_generator("sensors", seed=2, start=START, dirty=DirtyRates.clean()).batch(2000)
    result = refine_records("sensors", records)
    assert result.invalid.num_rows == 0
    assert result.valid.schema.equals(contract("sensors").silver_schema)
    devices, sites = reference("devices"), reference("sites")
    for record, row in zip(records, result.valid.to_pylist(), strict=True):
        event = orjson.loads(record.value)
        assert (row["value"], row["battery_pct"], row["unit"]) == (
            event["value"],
            event["battery_pct"],
            event["unit"],
        )
        device = devices[event["device_id"]]
        assert row["device_model"] == device["model"]
        assert row["device_installed_at"] == date.fromisoformat(device["installed_at"])
        assert row["site_ref_city"] == sites[event["site"]]["city"]
        assert row["battery_low"] == (None if event["battery_pct"] is None else event["battery_pct"] < 15)


ORDER = {
    "event_id": "8d0b7a3e-1c2f-4a5b-9c6d-7e8f9a0b1c2d",
    "event_time": "2025-03-03T11:59:00.000Z",
    "order_id": "O-12345678",
    "customer_id": "C-000042",
    "product_id": "P-00007",
    "category": "books",
    "quantity": 2,
    "unit_price": 12.5,
    "currency": "GBP",
    "country": "GB",
    "payment_method": "card",
    "channel": "web",
    "coupon_code": None,
}


def order(**changes: Any) -> bytes:
    event = {**ORDER, **changes}
    return orjson.dumps({name: value for name, value in event.items() if value is not ...})


def reasons_of(result: RefineResult) -> list[list[tuple[str, str | None, str]]]:
    return [
        [(r["check"], r["field"], r["message"]) for r in row] for row in result.invalid["reasons"].to_pylist()
    ]


def test_a_record_with_several_problems_lists_them_all() -> None:
    value = order(
        customer_id=..., quantity=-2, currency="XXX", country="Germany", event_time="2025-03-09T12:00:00Z"
    )
    result = refiner("orders").refine(raw_table([value]))
    assert reasons_of(result) == [
        [
            ("customer_id.required", "customer_id", "missing required field customer_id"),
            ("quantity.min", "quantity", "quantity: -2 is below min 1"),
            ("currency.allowed", "currency", 'currency: "XXX" is not one of EUR, USD, GBP'),
            ("country.regex", "country", 'country: "Germany" does not match ^[A-Z]{2}$'),
            ("event_not_in_future", None, "event time more than 10 minutes after the record reached Kafka"),
            ("currency_has_fx_rate", None, "no euro rate for the currency in reference/fx_rates.csv"),
        ]
    ]
    assert result.rules["quantity.min"].failed == 1 and result.rules["quantity.max"].passed == 1
    assert (
        result.rules["customer_id.type"].passed == result.rules["customer_id.type"].failed == 0
    )  # nothing to type


def test_a_kafka_timestamp_outside_the_calendar_is_quarantined_not_fatal() -> None:
    """A producer may stamp a record with any int64; DuckDB, Python and dt= folders stop at year 9999."""
    arrival = int(ARRIVAL.timestamp() * 1000)
    stamps = [10**16, arrival, -(10**15), 2**62]
    result = refiner("orders").refine(raw_table([order()] * 4, stamps))
    assert result.valid["_source_offset"].to_pylist() == [FIRST_OFFSET + 1]
    assert [[check for check, _, _ in row] for row in reasons_of(result)] == [
        ["kafka_timestamp"], ["kafka_timestamp", "event_not_in_future"], ["kafka_timestamp"]  # year 1 is early
    ]
    assert result.invalid["kafka_timestamp"].to_pylist() == [
        datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    ]
    assert result.rules["kafka_timestamp"] == RuleOutcome(1, 3, 0)
    assert quarantine_from_json(quarantine_json(result.invalid)).equals(result.invalid)


def test_records_that_are_not_json_objects() -> None:
    values = [None, b"[1, 2]", b'"text"', order()[:-1] + b",}", b"{'quantity': 1}", order(), b"\xff\xfe{}"]
    result = refiner("orders").refine(raw_table(values))
    assert result.valid["_source_offset"].to_pylist() == [FIRST_OFFSET + 5]
    got = {row["source_offset"] - FIRST_OFFSET: row for row in result.invalid.to_pylist()}
    messages = {index: [(r["check"], r["message"]) for r in row["reasons"]] for index, row in got.items()}
    assert messages[0] == [("json", "record has no value (null)")]
    assert got[0]["payload"] is None and got[0]["payload_encoding"] == "null"
    assert messages[1] == [("json", "not a JSON object but an array")]
    assert messages[2] == [("json", "not a JSON object but a string")]
    assert messages[3][0][0] == "json" and messages[3][0][1].startswith("not valid JSON: trailing comma")
    assert messages[4][0][0] == "json" and messages[4][0][1].startswith("not valid JSON: ")
    assert messages[6] == [("utf8", "not UTF-8")] and got[6]["payload_encoding"] == "base64"


def test_null_tokens_absent_and_null_fields_are_told_apart() -> None:
    values = [
        order(order_id=...),
        order(order_id=None),
        order(order_id="N/A"),
        order(country="NA"),
        order(coupon_code=""),
    ]
    result = refiner("orders").refine(raw_table(values))
    assert [row[0][2] for row in reasons_of(result)] == [
        "missing required field order_id",
        "required field order_id is null",
        'required field order_id is null (null token "N/A")',
    ]
    # "NA" is Namibia for country (its null tokens are only ""), and "" is a null coupon
    assert result.valid["country"].to_pylist() == ["NA", "GB"]
    assert result.valid["coupon_code"].to_pylist() == [None, None]


def test_warn_rule_keeps_the_row_and_counts_it() -> None:
    result = refiner("orders").refine(
        raw_table([order(quantity=400, unit_price=99.99, currency="EUR"), order()])
    )
    assert result.valid.num_rows == 2 and result.invalid.num_rows == 0
    assert result.valid["amount_eur"].to_pylist() == [Decimal("39996.00"), Decimal("29.07")]
    assert result.rules["large_order"].warned == 1 and result.rules["large_order"].passed == 1


def test_enrichment_without_a_match_is_caught_by_a_rule() -> None:
    reading = {
        "event_id": "8d0b7a3e-1c2f-4a5b-9c6d-7e8f9a0b1c2d",
        "event_time": "2025-03-03T11:59:00.000Z",
        "device_id": "D-99999",
        "site": "zrh-lab",
        "sensor_type": "temperature",
        "value": 21.5,
        "unit": "celsius",
        "battery_pct": None,
        "firmware": "2.4.0",
    }
    result = refiner("sensors").refine(raw_table([orjson.dumps(reading)]))
    assert [check for check, _, _ in reasons_of(result)[0]] == ["known_device"]
    assert result.rules["known_site"].warned == 1


def test_input_order_is_kept_whatever_the_join_does() -> None:
    records = make_generator("sensors", seed=9, start=START, dirty=DIRTY).batch(5000)
    result = refine_records("sensors", records)
    offsets = result.valid["_source_offset"].to_pylist()
    assert offsets == sorted(offsets)
    assert result.invalid["source_offset"].to_pylist() == sorted(result.invalid["source_offset"].to_pylist())
    event_ids = [orjson.loads(records[offset - FIRST_OFFSET].value)["event_id"] for offset in offsets]
    assert result.valid["event_id"].to_pylist() == event_ids


DEMO = """
dataset: demo
version: 3
event_time: ts
key: [id]
fields:
  id: {type: string}
  ts: {type: timestamp}
  n: {type: int, required: false}
  x: {type: float, required: false}
  price: {type: "decimal(10,2)", required: false, decimal_comma: true}
  flag: {type: bool, required: false}
  day: {type: date, required: false}
  note: {type: string, required: false}
  strict_n: {type: int, required: false, coerce: false}
  strict_ts: {type: timestamp, required: false, coerce: false}
  zero_is_null: {type: int, required: false, null_tokens: ["0"]}
"""
TS = "2025-03-03T11:00:00Z"
TYPE_ERROR = object()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Refiner:
    folder = tmp_path_factory.mktemp("contracts")
    (folder / "demo.yaml").write_text(DEMO)
    return Refiner(load_contract(folder / "demo.yaml"), folder)


COERCIONS: list[tuple[str, bytes, object]] = [
    ("n", b'"12"', 12),
    ("n", b'" -7 "', -7),
    ("n", b"3.0", 3),
    ("n", b"2.5", TYPE_ERROR),
    ("n", b'"three"', TYPE_ERROR),
    ("n", b"true", TYPE_ERROR),
    ("n", b"92233720368547758070", TYPE_ERROR),
    ("x", b'"12.5"', 12.5),
    ("x", b"7", 7.0),
    ("x", b"1e400", TYPE_ERROR),
    ("x", b"NaN", TYPE_ERROR),
    ("x", b'"n/a"', TYPE_ERROR),
    ("x", b'"12,5"', TYPE_ERROR),  # decimal_comma is off for x
    ("price", b'"12,99"', Decimal("12.99")),
    ("price", b'"12.5"', Decimal("12.50")),
    ("price", b"19.90", Decimal("19.90")),
    ("price", b"12.999", TYPE_ERROR),
    ("price", b'"1.234,5"', TYPE_ERROR),
    ("price", b"123456789.5", TYPE_ERROR),
    ("flag", b'"true"', True),
    ("flag", b"false", False),
    ("flag", b'"yes"', TYPE_ERROR),
    ("flag", b"1", TYPE_ERROR),
    ("day", b'"2025-03-03"', date(2025, 3, 3)),
    ("day", b'"03/03/2025"', TYPE_ERROR),
    ("day", b'"0001-01-01"', date(1, 1, 1)),
    ("day", b'"0000-12-31"', TYPE_ERROR),  # DuckDB has year 0 (1 BC); Python and dt= folders do not
    ("note", b'"N/A"', None),
    ("note", b'""', None),
    ("note", b'"NA "', "NA "),
    ("note", b"42", TYPE_ERROR),
    ("strict_n", b"12", 12),
    ("strict_n", b'"12"', TYPE_ERROR),
    ("strict_ts", b'"2025-03-03T12:00:00+01:00"', datetime(2025, 3, 3, 11, 0, tzinfo=UTC)),
    ("strict_ts", b"1741000000000", TYPE_ERROR),
    ("strict_ts", b'"9999-12-31T23:59:59Z"', datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),  # not the event time
    ("strict_ts", b'"0000-12-31T23:59:59Z"', TYPE_ERROR),
    ("zero_is_null", b'"0"', None),
    ("zero_is_null", b"0", 0),
]
TIMESTAMPS: list[tuple[bytes, object]] = [
    (b"1741000000000", datetime(2025, 3, 3, 11, 6, 40, tzinfo=UTC)),
    (b'"2025-03-03T12:30:00.250+01:00"', datetime(2025, 3, 3, 11, 30, 0, 250000, tzinfo=UTC)),
    (b'"2025-03-03T11:30:00Z"', datetime(2025, 3, 3, 11, 30, tzinfo=UTC)),
    (b'"2025-03-03T11:30:00"', TYPE_ERROR),  # no zone: ambiguous
    (b'"yesterday"', TYPE_ERROR),
    # Years 1-9999 in UTC only, whatever the spelling: DuckDB goes further, Python and dt= folders do not.
    (b'"0001-01-01T00:00:00Z"', datetime(1, 1, 1, tzinfo=UTC)),
    (b'"0000-01-01T00:00:00Z"', TYPE_ERROR),
    (b'"0001-01-01T00:30:00+01:00"', TYPE_ERROR),
    (b'"9999-12-30T23:59:59Z"', datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)),
    (b'"9999-12-31T00:00:00Z"', TYPE_ERROR),  # the event time: its gold window would end past 9999
    (b'"9999-12-31T23:30:00-01:00"', TYPE_ERROR),
]


def test_coercions_null_tokens_and_type_errors(demo: Refiner) -> None:
    values = [
        b'{"id": "a", "ts": "%s", "%s": %s}' % (TS.encode(), field.encode(), sent)
        for field, sent, _ in COERCIONS
    ]
    values += [b'{"id": "a", "ts": %s}' % sent for sent, _ in TIMESTAMPS]
    expected = [(field, sent, want) for field, sent, want in COERCIONS] + [
        ("ts", sent, want) for sent, want in TIMESTAMPS
    ]
    result = demo.refine(raw_table(values))
    valid = {row["_source_offset"] - FIRST_OFFSET: row for row in result.valid.to_pylist()}
    invalid = {row["source_offset"] - FIRST_OFFSET: row["reasons"] for row in result.invalid.to_pylist()}
    for index, (field, sent, want) in enumerate(expected):
        if want is TYPE_ERROR:
            assert index in invalid, (field, sent, valid.get(index))
            assert [r["check"] for r in invalid[index]] == [f"{field}.type"], (field, sent, invalid[index])
            assert (
                invalid[index][0]["message"].startswith(f"{field}: ")
                and " is not a" in invalid[index][0]["message"]
            )
        else:
            assert index in valid, (field, sent, invalid.get(index))
            assert valid[index][field] == want and type(valid[index][field]) is type(want), (field, sent)


def test_type_error_message_shows_what_was_sent(demo: Refiner) -> None:
    values = [
        b'{"id": "a", "ts": "%s", "price": "12,999"}' % TS.encode(),
        b'{"id": "a", "ts": "%s", "n": "three"}' % TS.encode(),
    ]
    assert reasons_of(demo.refine(raw_table(values))) == [
        [("price.type", "price", 'price: "12,999" is not a decimal(10,2)')],
        [("n.type", "n", 'n: "three" is not an int')],
    ]


def test_empty_and_multi_chunk_batches(demo: Refiner) -> None:
    empty = demo.refine(RAW_SCHEMA.empty_table())
    assert empty.valid.num_rows == empty.invalid.num_rows == 0
    assert empty.valid.schema.equals(demo.contract.silver_schema) and empty.invalid.schema.equals(
        QUARANTINE_SCHEMA
    )
    good, bad = b'{"id": "a", "ts": "%s"}' % TS.encode(), b'{"id": "a"}'
    table = pa.concat_tables([raw_table([good, bad]), raw_table([bad, good])])
    result = demo.refine(table)
    assert result.valid.num_rows == result.invalid.num_rows == 2


def test_silver_and_quarantine_json_round_trips_are_exact(
    dirty: tuple[str, list[GeneratedRecord], RefineResult],
) -> None:
    dataset, _, result = dirty
    lines = silver_json(result.valid)
    assert len(lines) == result.valid.num_rows
    first = orjson.loads(lines[0])
    assert first["event_time"].endswith("Z") and first["_kafka_timestamp"].endswith("Z")
    if dataset == "orders":
        assert isinstance(first["unit_price"], str) and isinstance(first["amount_eur"], str)
    back = silver_from_json(lines, contract(dataset))
    assert back.schema.equals(contract(dataset).silver_schema) and back.equals(result.valid)
    quarantined = quarantine_json(result.invalid)
    back = quarantine_from_json(quarantined)
    assert back.schema.equals(QUARANTINE_SCHEMA) and back.equals(result.invalid)
    assert silver_from_json([], contract(dataset)).num_rows == quarantine_from_json([]).num_rows == 0


def test_demo_json_round_trip_keeps_dates_decimals_and_nulls(demo: Refiner) -> None:
    value = (
        b'{"id": "a", "ts": "2025-03-03T11:00:00.123456Z", "price": "0,05", "day": "2024-02-29", "x": 0.1}'
    )
    result = demo.refine(raw_table([value, value.replace(b'"x": 0.1', b'"x": 1e-300')]))
    assert result.valid.num_rows == 2
    back = silver_from_json(silver_json(result.valid), demo.contract)
    assert back.equals(result.valid)
    assert back["ts"][0].as_py() == datetime(2025, 3, 3, 11, 0, 0, 123456, tzinfo=UTC)
