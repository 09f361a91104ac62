"""Sending events to ``<dataset>.raw``: the synthetic stream and the replay of a file.

Both paths pace themselves (a target rate, or a multiple of event-time speed), send one keyed
record per event through per-partition batches, stop cleanly when asked, and report a summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import structlog

from archlab.contract import Contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates, StreamShape, make_generator
from archlab.kafka.clients import KeyedBatchSender, make_producer

log = structlog.get_logger(__name__)

FLUSH_EVERY = 20_000  # records between waits for broker acknowledgements: bounds memory and loss on error
SENDS_PER_SECOND = 4
"""A paced stream ships what it generated this many times a second. Each send is a request to the broker;
the stages reading raw topics take a batch once a second when the stream is quiet (``LAB_BATCH_WAIT_MS``)."""
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Summary:
    topic: str
    sent: int
    failed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return f"{self.topic}: sent {self.sent:,}, failed {self.failed:,} in {self.seconds:.1f} s ({self.rate:,.0f} events/s)"


class _Pacer:
    """Sleeps so that event ``n`` leaves no earlier than ``start + n / rate`` (rate 0: no wait)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._start = time.monotonic()

    async def wait_for(self, sent: int) -> None:
        if self._interval:
            delay = self._start + sent * self._interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def produce_synthetic(
    settings: Settings,
    dataset: str,
    *,
    count: int,
    rate: float,
    seed: int,
    duration: float = 0.0,
    dirty: DirtyRates | None = None,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    topic: str | None = None,
    history: timedelta | None = None,
    shape: StreamShape | None = None,
) -> Summary:
    """Send ``count`` generated events (0 = until ``duration`` or ``stop``) at ``rate`` events/s
    to ``topic`` (default ``<dataset>.raw``). With ``history``, event times instead spread evenly
    over that span up to now (a backfill of ``count`` events, sent as fast as ``rate`` allows). ``shape``
    spreads them out of time order and over more groups (``StreamShape``)."""
    now = datetime.now(UTC)
    if history is not None and count:  # a backfill: the seasonal profile, its count ending before now
        start, spacing, until = now - history, count / history.total_seconds(), now
    else:  # live: event time keeps pace with the sending rate, so no seasonal profile
        start, spacing, until = now, rate or 1000.0, None
    generator = make_generator(dataset, seed=seed, start=start, events_per_second=spacing, dirty=dirty,
                               contracts_dir=settings.contracts_dir, seasonal=until is not None, until=until,
                               shape=shape)
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    chunk = max(1, min(5_000, int(rate / SENDS_PER_SECOND))) if rate > 0 else 5_000

    def batches() -> Iterator[list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]]:
        sent = 0
        while (count == 0 or sent < count) and time.monotonic() < deadline:
            size = chunk if count == 0 else min(chunk, count - sent)
            yield [(r.key, r.value, r.headers) for r in generator.batch(size)]
            sent += size

    return await _send(settings, topic or names.raw_topic(dataset), batches(), _Pacer(rate).wait_for, stop, progress)


async def _send(
    settings: Settings,
    topic: str,
    batches: Iterator[list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]],
    pace: Callable[[int], Awaitable[None]],
    stop: asyncio.Event | None,
    progress: Progress | None,
) -> Summary:
    producer = make_producer(settings)
    await producer.start()
    started = time.monotonic()
    sent = delivered = 0
    errors: list[BaseException] = []
    try:
        sender = await KeyedBatchSender.for_topic(producer, topic)
        since_flush = 0
        for batch in batches:
            if stop is not None and stop.is_set():
                break
            await pace(sent)
            for key, value, headers in batch:
                await sender.send(key, value, headers)
            sent += len(batch)
            since_flush += len(batch)
            await sender.ship()  # a paced stream must not wait for batches to fill up
            if since_flush >= FLUSH_EVERY:
                ok, failed = await sender.flush()
                delivered += ok
                errors += failed
                since_flush = 0
            if progress:
                progress(len(batch))
        ok, failed = await sender.flush()
        delivered += ok
        errors += failed
    finally:
        await producer.stop()
    for error in errors[:5]:
        log.error("delivery failed", topic=topic, error=repr(error))
    return Summary(topic, delivered, sent - delivered, time.monotonic() - started)


# --- replay ------------------------------------------------------------------------------------
def read_rows(path: Path, batch_rows: int = 5_000) -> tuple[int, Iterator[list[dict[str, object]]]]:
    """The row count and an iterator of row batches of a CSV, JSON Lines or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        parquet = pq.ParquetFile(path)
        return parquet.metadata.num_rows, (b.to_pylist() for b in parquet.iter_batches(batch_size=batch_rows))
    if suffix in {".jsonl", ".ndjson", ".json"}:
        table = pajson.read_json(path)
    elif suffix == ".csv":
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")
    return table.num_rows, (b.to_pylist() for b in table.to_batches(max_chunksize=batch_rows))


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_row(row: dict[str, object], contract: Contract) -> tuple[bytes | None, bytes]:
    """The Kafka key (contract key fields joined by ``|``) and JSON value of one row."""
    parts = [row.get(name) for name in contract.key]
    key = None if any(p is None for p in parts) else "|".join(str(p) for p in parts).encode()
    value = orjson.dumps(row, default=_json_default, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
    return key, value


def _event_seconds(value: object) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


async def replay_file(
    settings: Settings,
    contract: Contract,
    path: Path,
    *,
    speed: float = 0.0,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> Summary:
    """Send a file's rows in file order: as fast as possible, or at ``speed`` x event-time speed."""
    rows, row_batches = read_rows(path, 200 if speed > 0 else 5_000)
    if total:
        total(rows)
    state: dict[str, float] = {}
    clock_start = time.monotonic()

    def encoded() -> Iterator[list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]]:
        for batch in row_batches:
            out = []
            for row in batch:
                key, value = encode_row(row, contract)
                out.append((key, value, ()))
            if speed > 0 and batch:
                state["next_event"] = _event_seconds(batch[0].get(contract.event_time)) or state.get("next_event", 0.0)
            yield out

    async def pace(_sent: int) -> None:
        event = state.get("next_event")
        if speed <= 0 or event is None:
            return
        first = state.setdefault("first_event", event)
        delay = clock_start + (event - first) / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    return await _send(settings, names.raw_topic(contract.dataset), encoded(), pace, stop, progress)
