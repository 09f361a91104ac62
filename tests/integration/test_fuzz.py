"""Property-based fuzzing of bronze_sink and silver_refiner with hostile raw records, on the real stack.

Hypothesis draws batches of raw records: arbitrary bytes, deeply nested JSON, strings of up to
1.5 MiB, NaN / Infinity / -0.0 / 1e309 as numbers and as strings, wrong types for every field,
Unicode edge cases (escaped surrogates, NUL, RTL marks, emoji, combining marks, BOM), valid orders
and valid orders with one field mutated, empty values and keys. The services are started once per
test; each example sends one batch to the running pipeline and then checks everything sent so far:
bronze holds every raw record exactly once byte for byte, every record came out exactly once in
silver or quarantine, unmutated valid orders reached silver with the values sent, quarantine
reasons and payloads are sound, the lake holds the silver and quarantine topics, and no service
crashed, logged a traceback or grew past ``RSS_LIMIT``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings as hypothesis_settings, strategies as st

from archlab.contract import load_contract
from archlab.kafka import KeyedBatchSender, make_producer
from archlab.lake import Lake
from archlab.query import connect, layer_glob
from archlab.refine import TRUNCATED_PAYLOAD_BYTES
from archlab.settings import PROJECT_ROOT, Settings
from tests.integration.conftest import ServiceProcess, assert_exactly_once, bronze_rows, read_topic, wait_until
from tests.integration.test_silver import _env, copy_contract, lineage, read_all

pytestmark = pytest.mark.integration

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
MAX_PAYLOAD = CONTRACT.max_payload_bytes
HUGE_MAX = 1_536 * 1024
"""The largest raw value sent (the raw topic takes 4 MiB)."""
RSS_LIMIT = 400 * 1024 * 1024
EVENT_ID = "@@event-id@@"
"""Placeholder for the event id of a valid order; every sent copy gets a UUID of its own."""
LANDING_TIMEOUT = 90.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ALLOWED = {name: [str(v) for v in spec.allowed] for name, spec in CONTRACT.fields.items() if spec.allowed}
NULL_TOKENS = set(CONTRACT.null_tokens_of("coupon_code"))
COUPON_MAX = CONTRACT.fields["coupon_code"].max_length or 0
FIELDS = list(CONTRACT.fields)

# JSON texts that are numbers in name only, or numbers at the edges, sent bare and as strings.
EDGE_NUMBERS = [
    "NaN", "-NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e309", "-1e309", "1e-400", "-0.0", "-0",
    "0", "0.0", "1E+2", "1.5", "2.999", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "1" + "0" * 400, "0." + "0" * 400 + "1", "99999999999.99", "1000", "1001",
]
EDGE_STRINGS = [
    "", " ", "NA", "N/A", "null", "true", "\u0000", "a\u0000b", "\ufeff", "\ufeffEUR", "\u202eRUE\u202c",
    "\u200fEUR", "😀", "👩\u200d👩\u200d👧", "e\u0301", "E\u0301UR", "\ud800", "\udc00", "\udbff\udfff",
    "\uffff", "\U0010ffff", "O-0000000\u0661", "O-\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff11",
    "\u2028", "\t\n\r", "\\", '"', "'; DROP TABLE orders; --", "%s%n", "2025-03-03T11:00:00",
    "2025-02-30T11:00:00Z", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
]
COUPON_EDGES = [s for s in EDGE_STRINGS if not any("\ud800" <= c <= "\udfff" for c in s)]
"""The edge strings that are valid coupon codes: UTF-8 text (no lone surrogate) of at most 32 characters."""
# Repeated to build huge values; some expand up to 6 times when escaped as JSON.
HUGE_UNITS = [b"x", b"\x01", b"\x00", b'"', b"\\", "é".encode(), "😀".encode(), "\u202e".encode(), b"\xff", b"{"]
HUGE_SIZES = st.integers(60_000, HUGE_MAX) | st.sampled_from(
    [TRUNCATED_PAYLOAD_BYTES, TRUNCATED_PAYLOAD_BYTES + 1, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, HUGE_MAX]
)


@dataclass(frozen=True)
class Payload:
    """One raw record to send; ``expected`` holds the silver values of an unmutated valid order."""

    key: bytes | None
    value: bytes | None
    expected: dict[str, Any] | None = None


def _dumps(value: object, ascii_only: bool) -> str:
    """JSON text of ``value``; lone surrogates come out escaped (``\\ud800``) or raw (later not UTF-8)."""
    return json.dumps(value, ensure_ascii=ascii_only)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _render(members: list[tuple[str, str]], space: str) -> bytes:
    """A JSON object from (key, JSON text) pairs, keys in the given order."""
    body = f",{space}".join(f"{json.dumps(key)}:{space}{text}" for key, text in members)
    return _encode("{" + space + body + space + "}")


keys = st.none() | st.just(b"") | st.binary(max_size=40)
json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(EDGE_STRINGS) | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
strict_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20),
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
    """An event time in the past in a form the contract accepts, and the instant it means."""
    when = draw(st.datetimes(datetime(1940, 1, 1), datetime(2024, 12, 31)).map(lambda t: t.replace(tzinfo=UTC)))
    form = draw(st.sampled_from(["zulu", "offset", "epoch"]))
    if form == "epoch":
        ms = (when - EPOCH) // timedelta(milliseconds=1)
        return str(ms), EPOCH + timedelta(milliseconds=ms)
    digits = draw(st.sampled_from([0, 3, 6]))
    when = when.replace(microsecond=when.microsecond // 10 ** (6 - digits) * 10 ** (6 - digits) if digits else 0)
    fraction = f".{when.microsecond:06d}"[: digits + 1] if digits else ""
    separator = draw(st.sampled_from(["T", "t", " "]))
    if form == "zulu":
        local, zone = when, draw(st.sampled_from(["Z", "z", "+00:00"]))
    else:
        minutes = draw(st.integers(-12 * 60, 14 * 60))
        local = when.astimezone(timezone(timedelta(minutes=minutes)))
        sign, (hours, rest) = "-" if minutes < 0 else "+", divmod(abs(minutes), 60)
        zone = draw(st.sampled_from([f"{sign}{hours:02d}:{rest:02d}", f"{sign}{hours:02d}{rest:02d}"]))
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S") + fraction + zone
    return json.dumps(text), when


@st.composite
def valid_orders(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, Any]]:
    """A valid order as {field: JSON text} in any of the accepted spellings, and its silver values."""
    time_text, when = draw(event_times())
    quantity = draw(st.integers(1, 1000))
    price = draw(st.decimals(Decimal("0.01"), Decimal("9999999999.99"), places=2))
    ids = {name: draw(st.integers(0, 10**digits - 1)) for name, digits in
           (("order_id", 8), ("customer_id", 6), ("product_id", 5))}
    expected: dict[str, Any] = {
        "event_time": when,
        "order_id": f"O-{ids['order_id']:08d}",
        "customer_id": f"C-{ids['customer_id']:06d}",
        "product_id": f"P-{ids['product_id']:05d}",
        "quantity": quantity,
        "unit_price": price,
        "country": "".join(draw(st.lists(st.characters(min_codepoint=65, max_codepoint=90), min_size=2, max_size=2))),
        "coupon_code": None,
    } | {name: draw(st.sampled_from(values)) for name, values in ALLOWED.items()}
    texts = {name: json.dumps(value) for name, value in expected.items() if isinstance(value, str)}
    texts["event_id"] = json.dumps(EVENT_ID)
    texts["event_time"] = time_text
    texts["quantity"] = draw(st.sampled_from([str(quantity), f'"{quantity}"', f'" {quantity} "', f"{quantity}.0"]))
    plain = format(price, "f")
    texts["unit_price"] = draw(st.sampled_from([plain, f'"{plain}"', plain.rstrip("0").rstrip("."), plain + "000"]))
    coupon = draw(st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=COUPON_MAX)
                  | st.sampled_from(COUPON_EDGES))
    if coupon is not None:
        texts["coupon_code"] = _dumps(coupon, draw(st.booleans()))
        expected["coupon_code"] = None if coupon in NULL_TOKENS else coupon
    for name, value in draw(st.dictionaries(st.text(max_size=10).filter(lambda k: k not in texts), strict_json_values, max_size=3)).items():
        texts[name] = json.dumps(value)
    return texts, expected


@st.composite
def orders(draw: st.DrawFn) -> Payload:
    """A valid order, or one with a field removed, replaced or given twice."""
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
    members = draw(st.permutations(members))
    value = _render(members, draw(st.sampled_from(["", " ", "\n", "\t "])))
    key = expected["order_id"].encode() if expected else draw(keys)
    return Payload(key, value, expected)


junk_values = (
    st.none()
    | st.binary(max_size=300)
    | st.sampled_from([b"", b" ", b"{}", b"[]", b"null", b"\xef\xbb\xbf{}", b"{,}", b'{"a":1,}', b"\x00", b"\xed\xa0\x80"])
    | st.builds(lambda text, ascii_only: _encode(_dumps(text, ascii_only)), json_values, st.booleans())
    | deep_nesting().map(str.encode)
    | st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass"))
)
small_payloads = orders() | orders() | st.builds(Payload, keys, junk_values)


def _huge_text(unit: bytes, size: int) -> str:
    text = unit.decode("utf-8", "replace")
    return text * max(1, size // len(_encode(_dumps(text, False))[1:-1]))


@st.composite
def huge_payloads(draw: st.DrawFn) -> Payload:
    """A value of 60 KiB to 1.5 MiB: raw repeated bytes, a JSON string, or a huge field of an order."""
    unit, size = draw(st.sampled_from(HUGE_UNITS)), draw(HUGE_SIZES)
    form = draw(st.sampled_from(["raw", "string", "extra", "coupon"]))
    if form == "raw":
        return Payload(draw(keys), (unit * (size // len(unit) + 1))[:size])
    if form == "string":
        return Payload(draw(keys), _encode(_dumps(_huge_text(unit, size - 2), False)))
    texts, expected = draw(valid_orders())
    name = "blob" if form == "extra" else "coupon_code"
    texts[name] = _dumps(_huge_text(unit, size - 600), False)
    value = _render(list(texts.items()), " ")
    valid = form == "extra" and len(value) <= MAX_PAYLOAD
    return Payload(expected["order_id"].encode(), value, expected if valid else None)


@st.composite
def batches(draw: st.DrawFn) -> list[Payload]:
    """A few dozen drawn records, each small one sent several times (a fresh event id per copy), plus huge ones."""
    drawn = draw(st.lists(small_payloads, min_size=40, max_size=90))
    copies = draw(st.integers(4, 9))
    huge = draw(st.lists(huge_payloads(), min_size=1, max_size=3))
    return [p for p in drawn for _ in range(copies)] + huge


@dataclass
class Pipeline:
    """bronze_sink and silver_refiner running on one fresh orders-like dataset, and what was sent to it."""

    dataset: str
    services: list[ServiceProcess]
    sent: list[bytes | None] = field(default_factory=list)
    expected: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def check_services(self) -> None:
        """Fail unless every service runs, has no traceback in its log, and stays under ``RSS_LIMIT``."""
        for service in self.services:
            assert service.proc.poll() is None, f"{service.name} exited\n{service.log_tail(60)}"
            log = service.log_path.read_text(errors="replace")
            assert "Traceback" not in log, f"{service.name} logged a traceback\n{service.log_tail(60)}"
            process = psutil.Process(service.proc.pid)
            rss = sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
            self.peak_rss[service.name] = max(rss, self.peak_rss.get(service.name, 0))
            assert rss < RSS_LIMIT, f"{service.name} uses {rss / 2**20:.0f} MiB"

    def materialise(self, batch: list[Payload]) -> list[tuple[bytes | None, bytes | None]]:
        """The records to send, each valid order's placeholder replaced by a new event id."""
        records = []
        for payload in batch:
            value = payload.value
            if value is not None and EVENT_ID.encode() in value:
                value = value.replace(EVENT_ID.encode(), str(uuid.uuid4()).encode())
                if payload.expected is not None:
                    self.expected[value] = payload.expected
            key = payload.key if value is not None or payload.key is not None else b"tombstone"
            records.append((key, value))
            self.sent.append(value)
        return records


@pytest.fixture
async def pipeline(settings: Settings, tmp_path: Path, start_service: Callable[..., ServiceProcess]) -> Pipeline:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    bronze = start_service("bronze_sink", LAB_DATASETS=dataset, LAB_BRONZE_GROUP=f"bronze-{dataset}",
                           LAB_FLUSH_INTERVAL_S="0.5")
    refiner = start_service("silver_refiner", **_env(dataset, folder))
    await asyncio.gather(bronze.working(), refiner.working())
    return Pipeline(dataset, [bronze, refiner])


async def _send(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = await KeyedBatchSender.for_topic(producer, topic)
        for key, value in records:
            await sender.send(key, value)
        delivered, errors = await sender.flush()
        assert not errors and delivered == len(records), errors[:3]
    finally:
        await producer.stop()


async def _until(pipeline: Pipeline, condition: Callable[[], Any], what: str) -> None:
    """Poll an async ``condition`` while watching the services; fail on a crash or after the timeout."""
    deadline = asyncio.get_running_loop().time() + LANDING_TIMEOUT
    while not await condition():
        pipeline.check_services()
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(1)
    pipeline.check_services()


def _lake_count(lake: Lake, layer: str, dataset: str) -> int:
    if not [k for k in lake.list(f"{layer}/{dataset}") if k.endswith(".parquet")]:
        return 0
    return connect(lake).execute("SELECT count(*) FROM read_parquet(?)", [layer_glob(lake, layer, dataset)]).fetchone()[0]


def _check_silver(silver: list, raw: dict[tuple[int, int], bytes | None], expected: dict[bytes, dict[str, Any]]) -> None:
    """Every unmutated valid order reached silver with the values it was sent with."""
    rows = {(r["_source_partition"], r["_source_offset"]): r for r in map(lambda s: orjson.loads(s.value), silver)}
    for source, value in raw.items():
        want = expected.get(value) if value is not None else None
        if want is None:
            continue
        row = rows.get(source)
        assert row is not None, f"valid order {source} not in silver: {value[:300]!r}"
        got = {name: row[name] for name in want} | {
            "unit_price": Decimal(row["unit_price"]),
            "event_time": datetime.fromisoformat(row["event_time"]),
        }
        assert got == want, f"{source}: silver {got} != sent {want} for {value[:300]!r}"


def _check_quarantine(quarantine: list, raw: dict[tuple[int, int], bytes | None]) -> None:
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
        kept = base64.b64decode(row["payload"]) if row["payload_encoding"] == "base64" else _encode(row["payload"])
        assert value.startswith(kept) and (kept == value or len(kept) <= TRUNCATED_PAYLOAD_BYTES), (
            f"payload of {len(kept)} bytes for a {len(value)}-byte value: {value[:100]!r}"
        )


@hypothesis_settings(
    max_examples=4,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking would replay many whole batches against the stack
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
@given(batch=batches())
async def test_fuzzed_raw_records_land_once_and_services_survive(
    settings: Settings, lake: Lake, pipeline: Pipeline, batch: list[Payload]
) -> None:
    dataset = pipeline.dataset
    await _send(settings, f"{dataset}.raw", pipeline.materialise(batch))
    raw = await read_topic(settings, f"{dataset}.raw")
    assert Counter(raw.values()) == Counter(pipeline.sent), "the raw topic does not hold what was sent"

    async def bronze_landed() -> bool:
        return await asyncio.to_thread(_lake_count, lake, "bronze", dataset) >= len(raw)

    async def refined() -> bool:
        out = [await read_all(settings, f"{dataset}.{suffix}") for suffix in ("silver", "quarantine")]
        return sum(map(len, out)) >= len(raw)

    await _until(pipeline, bronze_landed, "bronze")
    await _until(pipeline, refined, "silver + quarantine")
    assert_exactly_once(await asyncio.to_thread(bronze_rows, lake, dataset), raw)

    silver, quarantine = await read_all(settings, f"{dataset}.silver"), await read_all(settings, f"{dataset}.quarantine")
    landed = lineage(silver, quarantine)
    assert len(landed) == len(set(landed)), f"{len(landed) - len(set(landed))} raw records came out twice"
    assert set(landed) == set(raw)
    _check_silver(silver, raw, pipeline.expected)
    _check_quarantine(quarantine, raw)

    async def on_lake() -> bool:
        counts = await asyncio.gather(*(asyncio.to_thread(_lake_count, lake, layer, dataset)
                                        for layer in ("silver", "quarantine")))
        return counts == [len(silver), len(quarantine)]

    await _until(pipeline, on_lake, "silver and quarantine on the lake")
