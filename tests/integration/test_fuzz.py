"""Property-based fuzzing of bronze_sink and silver_refiner with hostile raw records, on the real stack.

Hypothesis draws batches of raw records: arbitrary bytes, deeply nested JSON, values of up to 1.5 MiB,
NaN / Infinity / -0.0 / 1e309 as numbers and as strings, wrong types for every field, Unicode edge
cases (escaped and raw surrogates, NUL, RTL marks, emoji, combining marks, BOM), valid orders in every
accepted spelling and valid orders with one field removed, replaced or given twice, empty values,
null values and null or empty keys. Both services are started once per test; each example sends one
batch to the running pipeline and then checks everything sent so far: bronze holds every raw record
exactly once byte for byte, every record came out exactly once in silver or quarantine, unmutated
valid orders reached silver with the values sent, silver is keyed and partitioned by order id,
quarantine reasons and payloads are sound, the lake holds the silver and quarantine topics, and no
service exited, logged a traceback or grew past ``RSS_LIMIT``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.kafka.clients import KeyedBatchSender, make_producer, partition_for
from archlab.lake.query import table_stats
from archlab.lake.tables import Tables
from archlab.pipeline.silver.checks import TRUNCATED_PAYLOAD_BYTES
from tests.integration.conftest import ServiceProcess, assert_exactly_once, bronze_rows, read_all
from tests.integration.test_silver import _env, copy_contract, lineage

pytestmark = pytest.mark.integration

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
MAX_PAYLOAD = CONTRACT.max_payload_bytes
HUGE_MAX = 1_536 * 1024
"""The largest raw value sent (the raw topic takes 4 MiB)."""
RSS_LIMIT = 640 * 1024 * 1024
"""Per service: a guard against growth without bound, not a budget. The refiner takes about 250 MiB idle and
peaked at 415-435 MiB under this load with its de-duplication keys in a dict, and once at 523 MiB (a fresh-clone
CI run) with them in RocksDB stores, whose memtables, block cache and background threads come on top."""
LANDING_TIMEOUT = 90.0
EVENT_ID = "@" * 36
"""Placeholder for the event id of a valid order, as long as the UUID each sent copy gets instead."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAYERS = ("silver", "quarantine")

ALLOWED = {name: [str(v) for v in spec.allowed] for name, spec in CONTRACT.fields.items() if spec.allowed}
NULL_TOKENS = set(CONTRACT.null_tokens_of("coupon_code"))
COUPON_MAX = CONTRACT.fields["coupon_code"].max_length or 0

# Numbers in name only and numbers at the edges, sent bare and as strings.
EDGE_NUMBERS = [
    "NaN", "-NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e309", "-1e309", "1e-400", "-0.0",
    "-0", "0", "0.0", "1E+2", "1.5", "2.999", "9223372036854775807", "9223372036854775808",
    "-9223372036854775809", "1" + "0" * 400, "0." + "0" * 400 + "1", "99999999999.99", "1000", "1001",
]
EDGE_STRINGS = [
    "", " ", "NA", "N/A", "null", "true", "\u0000", "a\u0000b", "\ufeff", "\ufeffEUR", "\u202eRUE\u202c",
    "\u200fEUR", "😀", "👩\u200d👩\u200d👧", "e\u0301", "E\u0301UR", "\ud800", "\udc00", "\udbff\udfff",
    "\uffff", "\U0010ffff", "O-0000000\u0661", "O-\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff11",
    "\u2028", "\t\n\r", "\\", '"', "'; DROP TABLE orders; --", "%s%n", "2025-03-03T11:00:00",
    "2025-02-30T11:00:00Z", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
]
COUPON_EDGES = [s for s in EDGE_STRINGS if not any("\ud800" <= c <= "\udfff" for c in s)]
"""The edge strings that make valid coupon codes: no lone surrogate, at most 32 characters."""
# Repeated to build huge values; some swell up to six times when escaped as JSON.
HUGE_UNITS = [b"x", b"\x01", b"\x00", b'"', b"\\", b"{", b"\xff", *(c.encode() for c in "é😀\u202e")]
HUGE_SIZES = st.integers(60_000, HUGE_MAX) | st.sampled_from(
    [TRUNCATED_PAYLOAD_BYTES, TRUNCATED_PAYLOAD_BYTES + 1, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1,
     HUGE_MAX]
)


@dataclass(frozen=True, repr=False)
class Payload:
    """One raw record to send; ``expected`` holds the silver values of an unmutated valid order."""

    key: bytes | None
    value: bytes | None
    expected: dict[str, Any] | None = None

    def __repr__(self) -> str:  # a failing example lists hundreds of these, some of 1.5 MiB
        shown = "None" if self.value is None else f"{len(self.value)} bytes {self.value[:80]!r}"
        return f"Payload(key={self.key!r:.40}, value={shown}, valid={self.expected is not None})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis prints a failing example: as ``repr``, not field by field."""
        printer.text(repr(self))


def _dumps(value: object, ascii_only: bool) -> str:
    """JSON text of ``value``; lone surrogates come out escaped (``\\ud800``) or raw (later not UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _render(members: list[tuple[str, str]], space: str) -> bytes:
    """A JSON object from (key, JSON text) pairs, in their order."""
    body = f",{space}".join(f"{json.dumps(key)}:{space}{text}" for key, text in members)
    return _encode("{" + space + body + space + "}")


keys = st.none() | st.just(b"") | st.binary(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(EDGE_STRINGS)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
strict_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    """Arrays or objects nested up to 600 levels deep, sometimes left unclosed."""
    depth = draw(st.integers(1, 600))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"a":[', "]}")]))
    leaf = draw(st.sampled_from(["1", "null", '"x"', "NaN", "{}", "[]"]))
    closed = depth if draw(st.booleans()) else draw(st.integers(0, depth))
    return opener * depth + leaf + closer * closed


edge_json = (
    st.sampled_from(EDGE_NUMBERS)
    | st.sampled_from(EDGE_NUMBERS).map(json.dumps)
    | st.builds(_dumps, st.sampled_from(EDGE_STRINGS), st.booleans())
    | st.sampled_from(["true", "false", "null", "[]", "{}", '{"value": 1}', "[1, 2]"])
    | deep_nesting()
    | st.builds(_dumps, json_values, st.booleans())
)


@st.composite
def event_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """An event time in the past as JSON text in a form the contract accepts, and the instant it means."""
    when = draw(st.datetimes(datetime(1940, 1, 1), datetime(2024, 12, 31), timezones=st.just(UTC)))
    form = draw(st.sampled_from(["zulu", "offset", "epoch"]))
    if form == "epoch":
        ms = (when - EPOCH) // timedelta(milliseconds=1)
        return str(ms), EPOCH + timedelta(milliseconds=ms)
    digits = draw(st.sampled_from([0, 3, 6]))
    unit = 10 ** (6 - digits)
    when = when.replace(microsecond=when.microsecond // unit * unit)
    fraction = f".{when.microsecond:06d}"[: digits + 1] if digits else ""
    separator = draw(st.sampled_from(["T", "t", " "]))
    if form == "zulu":
        local, zone = when, draw(st.sampled_from(["Z", "z", "+00:00"]))
    else:
        minutes = draw(st.integers(-12 * 60, 14 * 60))
        local = when.astimezone(timezone(timedelta(minutes=minutes)))
        sign, (hours, rest) = "-" if minutes < 0 else "+", divmod(abs(minutes), 60)
        zone = draw(st.sampled_from([f"{sign}{hours:02d}:{rest:02d}", f"{sign}{hours:02d}{rest:02d}"]))
    return json.dumps(local.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + zone), when


@st.composite
def valid_orders(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, Any]]:
    """A valid order as {field: JSON text}, each in one of its accepted spellings, and its silver values."""
    time_text, when = draw(event_times())
    quantity = draw(st.integers(1, 1000))
    price = draw(st.decimals(Decimal("0.01"), Decimal("9999999999.99"), places=2))
    country = draw(st.text(st.sampled_from(string.ascii_uppercase), min_size=2, max_size=2))
    expected: dict[str, Any] = {
        "event_time": when,
        "order_id": f"O-{draw(st.integers(0, 10**8 - 1)):08d}",
        "customer_id": f"C-{draw(st.integers(0, 10**6 - 1)):06d}",
        "product_id": f"P-{draw(st.integers(0, 10**5 - 1)):05d}",
        "quantity": quantity,
        "unit_price": price,
        "country": country,
        "coupon_code": None,
    } | {name: draw(st.sampled_from(values)) for name, values in ALLOWED.items()}
    texts = {name: json.dumps(value) for name, value in expected.items() if isinstance(value, str)}
    texts["event_id"] = json.dumps(EVENT_ID)
    texts["event_time"] = time_text
    number, plain = str(quantity), format(price, "f")
    texts["quantity"] = draw(st.sampled_from([number, f'"{number}"', f'" {number} "', f"{number}.0"]))
    short = plain.rstrip("0").rstrip(".")
    texts["unit_price"] = draw(st.sampled_from([plain, f'"{plain}"', short, f"{plain}00"]))
    coupon = draw(
        st.none()
        | st.text(st.characters(exclude_categories=["Cs"]), max_size=COUPON_MAX)
        | st.sampled_from(COUPON_EDGES)
    )
    if coupon is not None:
        texts["coupon_code"] = _dumps(coupon, draw(st.booleans()))
        expected["coupon_code"] = None if coupon in NULL_TOKENS else coupon
    unknown = st.text(max_size=10).filter(lambda name: name not in texts)
    for name, value in draw(st.dictionaries(unknown, strict_json_values, max_size=3)).items():
        texts[name] = json.dumps(value)
    return texts, expected


@st.composite
def orders(draw: st.DrawFn) -> Payload:
    """A valid order keyed by its order id, or one with a field removed, replaced or given twice."""
    texts, expected = draw(valid_orders())
    members = list(texts.items())
    mutation = draw(st.sampled_from(["none", "remove", "replace", "replace", "twice"]))
    if mutation != "none":
        index = draw(st.integers(0, len(members) - 1))
        name = members[index][0]
        if mutation == "remove":
            del members[index]
        elif mutation == "replace":
            members[index] = (name, draw(edge_json))
        else:
            members.insert(draw(st.integers(0, len(members))), (name, draw(edge_json)))
        expected = None
    value = _render(draw(st.permutations(members)), draw(st.sampled_from(["", " ", "\n", "\t "])))
    return Payload(expected["order_id"].encode() if expected else draw(keys), value, expected)


junk_values = (
    st.none()
    | st.binary(max_size=300)
    | st.sampled_from([b"", b" ", b"{}", b"[]", b"null", b"\xef\xbb\xbf{}", b"{,}", b'{"a":1,}', b"\x00",
                       b"\xed\xa0\x80"])
    | st.builds(lambda value, ascii_only: _encode(_dumps(value, ascii_only)), json_values, st.booleans())
    | deep_nesting().map(str.encode)
    | st.text(max_size=100).map(_encode)
)
small_payloads = orders() | orders() | st.builds(Payload, keys, junk_values)


def _huge_text(unit: bytes, size: int) -> str:
    """``unit`` repeated to about ``size`` bytes once escaped as JSON."""
    text = unit.decode("utf-8", "replace")
    return text * max(1, size // (len(_encode(_dumps(text, False))) - 2))


@st.composite
def huge_payloads(draw: st.DrawFn) -> Payload:
    """A value of 60 KiB to 1.5 MiB: repeated bytes, a JSON string, or an order with a huge field."""
    unit, size = draw(st.sampled_from(HUGE_UNITS)), draw(HUGE_SIZES)
    form = draw(st.sampled_from(["raw", "string", "extra", "coupon"]))
    if form == "raw":
        return Payload(draw(keys), (unit * (size // len(unit) + 1))[:size])
    if form == "string":
        return Payload(draw(keys), _encode(_dumps(_huge_text(unit, size - 2), False)))
    texts, expected = draw(valid_orders())
    texts["blob" if form == "extra" else "coupon_code"] = _dumps(_huge_text(unit, size - 600), False)
    value = _render(list(texts.items()), " ")
    valid = form == "extra" and len(value) <= MAX_PAYLOAD
    return Payload(expected["order_id"].encode(), value, expected if valid else None)


@st.composite
def batches(draw: st.DrawFn) -> list[Payload]:
    """A few dozen drawn records, each sent several times (a new event id per copy), and huge ones."""
    drawn = draw(st.lists(small_payloads, min_size=40, max_size=90))
    copies = draw(st.integers(4, 9))
    huge = draw(st.lists(huge_payloads(), min_size=1, max_size=3))
    return [payload for payload in drawn for _ in range(copies)] + huge


def _order_at(time_text: str, when: datetime | None) -> Payload:
    """A valid order but for its event time; ``when`` is the silver time, or None if it must be quarantined."""
    expected: dict[str, Any] = {
        "event_time": when, "order_id": "O-00000001", "customer_id": "C-000001", "product_id": "P-00001",
        "quantity": 1, "unit_price": Decimal("1.00"), "country": "DE", "coupon_code": None,
    } | {name: values[0] for name, values in ALLOWED.items()}
    texts = {name: json.dumps(value) for name, value in expected.items() if isinstance(value, str)}
    texts |= {"event_id": json.dumps(EVENT_ID), "event_time": json.dumps(time_text), "quantity": "1",
              "unit_price": '"1.00"'}
    return Payload(b"O-00000001", _render(list(texts.items()), ""), expected if when is not None else None)


EXTREMES = [
    _order_at("0001-01-01T00:30:00Z", datetime(1, 1, 1, 0, 30, tzinfo=UTC)),  # the first hour folder
    _order_at("0000-12-31T23:00:00Z", None),  # year 0: DuckDB has it, Python and dt= folders do not
    _order_at("0001-01-01T00:30:00+01:00", None),
    Payload(None, b"\x01" * MAX_PAYLOAD),  # the largest parsed value, six times larger escaped as JSON
    Payload(b"", b'"' * MAX_PAYLOAD),
    Payload(b"\x00", b"\xff" * MAX_PAYLOAD),  # not UTF-8: quarantined in base64
    Payload(None, b"\x00" * (MAX_PAYLOAD + 1)),  # just over the limit: never parsed
    Payload(None, b"[" * 500 + b"]" * 500),
    Payload(b"k", b'{"a":' * 500 + b"1" + b"}" * 500),
    Payload(b"k", None),
    Payload(None, b""),
]
"""A batch that always runs first: the worst cases the strategies only now and then draw."""


@dataclass
class Pipeline:
    """bronze_sink and silver_refiner running on one fresh orders-like dataset, and what was sent to it."""

    dataset: str
    services: list[ServiceProcess]
    sent: list[bytes | None] = field(default_factory=list, repr=False)
    expected: dict[bytes, dict[str, Any]] = field(default_factory=dict, repr=False)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis prints this fixture in a failing example: without the records sent."""
        printer.text(f"Pipeline({self.dataset!r}, {len(self.sent)} records sent)")

    def check_services(self) -> None:
        """Fail unless every service runs, has no traceback in its log and stays under ``RSS_LIMIT``."""
        for service in self.services:
            assert service.alive(), f"{service.name} exited\n{service.log_tail(60)}"
            log = service.log_path.read_text(errors="replace")
            assert "Traceback" not in log, f"{service.name} logged a traceback\n{service.log_tail(60)}"
            process = psutil.Process(service.pid)
            rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            self.peak_rss[service.name] = max(rss, self.peak_rss.get(service.name, 0))
            assert rss < RSS_LIMIT, f"{service.name} uses {rss / 2**20:.0f} MiB"

    def materialise(self, batch: list[Payload]) -> list[tuple[bytes | None, bytes | None]]:
        """The (key, value) records to send, each valid order's placeholder replaced by a new event id."""
        records = []
        for payload in batch:
            value = payload.value
            if value is not None and EVENT_ID.encode() in value:
                value = value.replace(EVENT_ID.encode(), str(uuid.uuid4()).encode())
                if payload.expected is not None:
                    self.expected[value] = payload.expected
            key = b"tombstone" if payload.key is None and value is None else payload.key  # Kafka needs one
            records.append((key, value))
            self.sent.append(value)
        return records


@pytest.fixture
async def pipeline(
    settings: Settings, tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> AsyncIterator[Pipeline]:
    """Both services on a fresh orders-like dataset, started once for all examples of a test."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    bronze = start_service("bronze_sink", LAB_DATASETS=dataset, LAB_BRONZE_GROUP=f"bronze-{dataset}",
                           LAB_FLUSH_INTERVAL_S="0.5")
    refiner = start_service("silver_refiner", **_env(dataset, folder))
    await asyncio.gather(bronze.working(), refiner.working())
    running = Pipeline(dataset, [bronze, refiner])
    yield running
    print("peak RSS:", {name: f"{rss / 2**20:.0f} MiB" for name, rss in running.peak_rss.items()})


async def _send(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = await KeyedBatchSender.for_topic(producer, topic)
        await sender.send_many([key for key, _ in records], [value for _, value in records])
        delivered, errors = await sender.flush()
        assert not errors and delivered == len(records), errors[:3]
    finally:
        await producer.stop()


async def _until(pipeline: Pipeline, condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` while watching the services; fail at once on a crash, or after the timeout."""
    deadline = asyncio.get_running_loop().time() + LANDING_TIMEOUT
    while not await condition():
        pipeline.check_services()
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(1)
    pipeline.check_services()


def _lake_count(tables: Tables, layer: str, dataset: str) -> int:
    """Rows of the table's committed snapshot (its Delta log), not of every Parquet file under it: files a
    compaction removed stay until vacuum, and the log's checkpoints are Parquet files too."""
    return table_stats(tables, layer, dataset).rows


def _check_silver(
    silver: list[ConsumerRecord], raw: list[ConsumerRecord], expected: dict[bytes, dict[str, Any]],
    partitions: int,
) -> None:
    """Silver is keyed and partitioned by order id; every unmutated valid order is in it, as sent."""
    raw_keys = {(r.partition, r.offset): r.key for r in raw}
    rows = {}
    for record in silver:
        row = orjson.loads(record.value)
        source = (row["_source_partition"], row["_source_offset"])
        assert record.key == row["order_id"].encode(), (record.key, row["order_id"])
        assert record.partition == partition_for(record.key, partitions), (
            f"silver key {record.key!r} is in partition {record.partition}, not where it hashes "
            f"({partition_for(record.key, partitions)}); raw record {source} was keyed {raw_keys[source]!r}"
        )
        rows[source] = row
    for record in raw:
        want = None if record.value is None else expected.get(record.value)
        if want is None:
            continue
        row = rows.get((record.partition, record.offset))
        assert row is not None, f"a valid order is not in silver: {record.value[:300]!r}"
        got = {name: row[name] for name in want} | {
            "unit_price": Decimal(row["unit_price"]),
            "event_time": datetime.fromisoformat(row["event_time"]),
        }
        assert got == want, f"silver {got} != sent {want} for {record.value[:300]!r}"


def _check_quarantine(quarantine: list[ConsumerRecord], raw: dict[tuple[int, int], bytes | None]) -> None:
    """Reasons are non-empty strings; the payload is the raw value, or a prefix of at most 64 KiB of it."""
    for record in quarantine:
        row = orjson.loads(record.value)
        value = raw[(row["source_partition"], row["source_offset"])]
        reasons = row["reasons"]
        assert reasons and all(
            isinstance(r["check"], str) and r["check"] and isinstance(r["message"], str) and r["message"]
            for r in reasons
        ), reasons
        if row["payload_encoding"] == "null":
            assert value is None and row["payload"] is None
            continue
        assert value is not None
        encoded = row["payload_encoding"] == "base64"
        kept = base64.b64decode(row["payload"]) if encoded else _encode(row["payload"])
        assert value.startswith(kept) and (kept == value or len(kept) <= TRUNCATED_PAYLOAD_BYTES), (
            f"payload of {len(kept)} bytes for a {len(value)}-byte value: {value[:100]!r}"
        )


@hypothesis_settings(
    max_examples=5,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking would replay whole batches against the stack
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(batch=batches())
@example(batch=EXTREMES)
async def test_fuzzed_raw_records_land_once_and_services_survive(
    settings: Settings, tables: Tables, pipeline: Pipeline, batch: list[Payload]
) -> None:
    dataset = pipeline.dataset
    await _send(settings, names.raw_topic(dataset), pipeline.materialise(batch))
    raw_records = await read_all(settings, names.raw_topic(dataset))
    raw = {(r.partition, r.offset): r.value for r in raw_records}
    assert Counter(raw.values()) == Counter(pipeline.sent), "the raw topic does not hold what was sent"

    async def bronze_landed() -> bool:
        return await asyncio.to_thread(_lake_count, tables, "bronze", dataset) >= len(raw)

    async def refined() -> bool:
        return sum([len(await read_all(settings, names.topic(dataset, layer))) for layer in LAYERS]) >= len(raw)

    await _until(pipeline, bronze_landed, "bronze")
    assert_exactly_once(await asyncio.to_thread(bronze_rows, tables, dataset), raw)
    await _until(pipeline, refined, "silver + quarantine")
    silver, quarantine = [await read_all(settings, names.topic(dataset, layer)) for layer in LAYERS]
    landed = lineage(silver, quarantine)
    assert len(landed) == len(set(landed)), f"{len(landed) - len(set(landed))} raw records came out twice"
    assert set(landed) == set(raw)
    _check_silver(silver, raw_records, pipeline.expected, settings.topic_partitions)
    _check_quarantine(quarantine, raw)

    async def on_lake() -> bool:
        counts = [await asyncio.to_thread(_lake_count, tables, layer, dataset) for layer in LAYERS]
        return counts == [len(silver), len(quarantine)]

    await _until(pipeline, on_lake, "silver and quarantine on the lake")
