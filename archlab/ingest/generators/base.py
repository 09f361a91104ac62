"""Records, dirty-data rates and the shared machinery every dataset generator builds on.

A dataset generator only produces blocks of clean events; this module turns them into Kafka
records and injects the dirty kinds. Work is done in fixed-size internal blocks served from a
buffer, so the output depends on the seed and settings, never on the batch sizes asked for.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from archlab.contract import Contract
from archlab.ingest.generators.clock import DAY_MS, MINUTE_MS, ArrivalClock, iso_ms

Event = dict[str, Any]
Rng = np.random.Generator

INJECTED_HEADER = "lab-injected"
MIB = 1024 * 1024
OVERSIZED_BYTES = (MIB + 1024, MIB + MIB // 4)
"""Range of an oversized record's size: over the 1 MiB ``max_payload_bytes`` of the shipped contracts."""


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One Kafka record as the producer sends it.

    ``event_time_ms`` is the virtual clock at emission: the event time for clean events, and the
    moment a late, future or duplicated record was sent, so replay pacing never jumps.
    """

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    event_time_ms: int


class DirtyRates(BaseModel):
    """Fraction of records of each dirty kind; the defaults add up to about 4%.

    Each generated event is turned into at most one kind. ``duplicate`` adds a copy of an earlier
    event in front of it, so its realised share is ``duplicate / (1 + duplicate)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    duplicate: float = Field(0.008, ge=0, le=1, description="exact re-send of an earlier clean event")
    malformed_json: float = Field(0.004, ge=0, le=1, description="truncated or garbled JSON text")
    missing_field: float = Field(0.005, ge=0, le=1, description="a required field removed")
    wrong_type: float = Field(0.005, ge=0, le=1, description="a field of the wrong JSON type")
    out_of_range: float = Field(0.004, ge=0, le=1, description="a number outside its valid range")
    unknown_enum: float = Field(0.004, ge=0, le=1, description="a value outside its allowed set")
    late: float = Field(0.008, ge=0, le=1, description="valid event, time minutes to hours behind")
    future: float = Field(0.002, ge=0, le=1, description="event time days ahead of the clock")
    oversized: float = Field(
        0.00002, ge=0, le=0.001, description="value over 1 MiB; capped because each costs >1 MiB"
    )
    non_utf8: float = Field(0.002, ge=0, le=1, description="value bytes that are not UTF-8")

    @model_validator(mode="after")
    def _at_most_one_kind_per_event(self) -> DirtyRates:
        total = sum(getattr(self, kind) for kind in type(self).model_fields)
        if total > 1:
            raise ValueError(f"dirty rates add up to {total:.3f}; they must not exceed 1")
        return self

    @classmethod
    def clean(cls) -> DirtyRates:
        """No dirty data at all."""
        return cls(**{kind: 0.0 for kind in cls.model_fields})


class StreamShape(BaseModel):
    """How clean events spread over time and groups, beyond their rate: the knobs of a workload
    that is hard for windowed aggregation (events far out of order, a window per few events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_of_order_ms: int = Field(
        0, ge=0, le=30 * DAY_MS,
        description="each clean event's time is moved back by a uniform draw from 0 to this (ms): "
                    "arrival order no longer follows event time",
    )
    cardinality: float = Field(
        1.0, gt=0, le=200,
        description="multiplies the number of distinct entities (orders: products and customers), "
                    "so group-by dimensions take that many more values",
    )


DIRTY_KINDS: tuple[str, ...] = tuple(DirtyRates.model_fields)
_HEADERS = {kind: ((INJECTED_HEADER, kind.encode()),) for kind in DIRTY_KINDS}


class EventGenerator(Protocol):
    """What the producer needs: a dataset name and an endless stream of records."""

    dataset: str

    def batch(self, n: int) -> list[GeneratedRecord]: ...


class DatasetGenerator(ABC):
    """Turns a dataset's clean event blocks into records, with dirty kinds injected.

    Subclasses generate clean events and say how their fields break: ``_wrong_type``,
    ``_out_of_range`` and ``_unknown_enum`` mutate a copy of an event in place. A hand-written
    generator sets the attributes below on its class, the generic one per instance from its contract.
    """

    dataset: str
    fields: tuple[str, ...]
    """Every field the generator emits, checked against the contract at start-up."""
    oversized_field: str
    """A string field that can hold the huge text of an oversized record."""
    _clock: ArrivalClock
    """The virtual event time; every subclass sets it."""
    latin1_texts: Mapping[str, Sequence[str]]
    """Per string field, non-ASCII texts that a legacy latin-1 sender would garble."""

    _RECENT = 256  # ring of the latest clean records: "the one just before" duplicates
    _SPARSE_EVERY = 64  # and every 64th one, reaching minutes back for older duplicates
    _SPARSE = 4096

    def __init__(self, contract: Contract, seed: int, dirty: DirtyRates, shape: StreamShape | None = None) -> None:
        if set(self.fields) != set(contract.fields):
            raise ValueError(
                f"generator {self.dataset!r} emits {sorted(self.fields)} "
                f"but the contract defines {sorted(contract.fields)}"
            )
        self._time_field = contract.event_time
        self._key_fields = tuple(contract.key)
        self._required = tuple(name for name, spec in contract.fields.items() if spec.required)
        self._required_keys = tuple(name for name in self._key_fields if name in self._required)
        self._key_of = _key_function(self._key_fields)
        # One root seed, mixed with the dataset name so datasets sharing a seed still differ.
        root = np.random.SeedSequence([seed, zlib.crc32(self.dataset.encode())])
        catalogue_seq, events_seq, dirty_seq, shape_seq = root.spawn(4)  # the first three as before shapes
        self._shape = shape or StreamShape()
        self._shape_rng = np.random.Generator(np.random.PCG64(shape_seq))
        self._catalogue_rng = np.random.Generator(np.random.PCG64(catalogue_seq))
        self._rng = np.random.Generator(np.random.PCG64(events_seq))
        self._dirty_rng = np.random.Generator(np.random.PCG64(dirty_seq))
        rates = np.array([getattr(dirty, kind) for kind in DIRTY_KINDS])
        self._dirty_cdf = np.cumsum(rates) if rates.sum() > 0 else None
        self._buffer: list[GeneratedRecord] = []
        self._served = 0
        self._recent: deque[GeneratedRecord] = deque(maxlen=self._RECENT)
        self._sparse: deque[GeneratedRecord] = deque(maxlen=self._SPARSE)
        self._clean_count = 0
        self._dataset_breakers: dict[str, Callable[[Event, Rng], None]] = {
            "wrong_type": self._wrong_type,
            "out_of_range": self._out_of_range,
            "unknown_enum": self._unknown_enum,
        }

    @abstractmethod
    def _clean_block(self) -> tuple[np.ndarray, list[Event]]:
        """The next fixed-size block of clean events and their event times (int ms, sorted)."""

    @abstractmethod
    def _wrong_type(self, event: Event, rng: Rng) -> None:
        """Give one non-key field a value of the wrong JSON type."""

    @abstractmethod
    def _out_of_range(self, event: Event, rng: Rng) -> None:
        """Put one numeric field outside its valid range."""

    @abstractmethod
    def _unknown_enum(self, event: Event, rng: Rng) -> None:
        """Put one enumerated field outside its allowed set."""

    def at_constant_rate(self) -> None:
        """Arrivals at the mean rate from now on, without a seasonal profile: the event time of a live
        stream then keeps pace with a producer sending at that rate (a quiet-night profile would
        otherwise run it ahead of the wall clock, into the contract's "not in the future" rule)."""
        self._clock = self._clock.flat()

    def shape_as(self, shape: StreamShape) -> None:
        """Spread the events not yet drawn out of time order as ``shape`` says (its cardinality is the
        subclass's to apply, when it builds its catalogue)."""
        self._shape = shape

    def average_until(self, end_ms: int) -> None:
        """The rate becomes the mean from the start to ``end_ms``: a backfill of that span ends before it."""
        self._clock.average_over(end_ms)

    def batch(self, n: int) -> list[GeneratedRecord]:
        """The next ``n`` records of the stream."""
        if n < 0:
            raise ValueError(f"batch size must be >= 0, got {n}")
        while len(self._buffer) - self._served < n:
            self._buffer = self._buffer[self._served :]
            self._served = 0
            self._fill()
        out = self._buffer[self._served : self._served + n]
        self._served += n
        return out

    def _fill(self) -> None:
        times, events = self._clean_block()
        self._disorder(times, events)
        if self._dirty_cdf is None:
            kinds: Sequence[int] = [0] * len(events)
        else:
            draws = self._dirty_rng.random(len(events))
            codes = np.searchsorted(self._dirty_cdf, draws, side="right") + 1
            codes[codes > len(DIRTY_KINDS)] = 0
            kinds = codes.tolist()
        dumps, key_of, out = orjson.dumps, self._key_of, self._buffer
        for event, time_ms, kind in zip(events, times.tolist(), kinds, strict=True):
            if kind == 0:
                self._emit_clean(GeneratedRecord(key_of(event), dumps(event), (), time_ms))
            elif kind == 1:  # duplicate: the copy goes out in front of the event itself
                if self._recent:
                    out.append(self._duplicate(time_ms))
                self._emit_clean(GeneratedRecord(key_of(event), dumps(event), (), time_ms))
            else:
                out.append(self._inject(DIRTY_KINDS[kind - 1], event, time_ms))

    def _disorder(self, times: np.ndarray, events: list[Event]) -> None:
        """Move each event's time back by up to ``out_of_order_ms`` (the record's clock time stays, so
        pacing does not jump): the stream then arrives out of event-time order by that much."""
        spread = self._shape.out_of_order_ms
        if not spread:
            return
        shifted = iso_ms(times - self._shape_rng.integers(0, spread + 1, len(times)))
        field = self._time_field
        for event, moment in zip(events, shifted, strict=True):
            event[field] = moment

    def _emit_clean(self, record: GeneratedRecord) -> None:
        self._buffer.append(record)
        self._recent.append(record)
        self._clean_count += 1
        if self._clean_count % self._SPARSE_EVERY == 0:
            self._sparse.append(record)

    def _duplicate(self, time_ms: int) -> GeneratedRecord:
        rng = self._dirty_rng
        draw = rng.random()
        if draw < 0.5 or not self._sparse:
            source = self._recent[-1]
        elif draw < 0.75:
            source = self._recent[int(rng.integers(len(self._recent)))]
        else:
            source = self._sparse[int(rng.integers(len(self._sparse)))]
        return GeneratedRecord(source.key, source.value, _HEADERS["duplicate"], time_ms)

    def _inject(self, kind: str, event: Event, time_ms: int) -> GeneratedRecord:
        """Break a copy of ``event`` in the way ``kind`` names."""
        rng = self._dirty_rng
        broken = dict(event)
        key = self._key_of(event)
        if kind == "malformed_json":
            value = _malformed(broken, rng)
        elif kind == "non_utf8":
            value = self._non_utf8(broken, rng)
        else:
            if kind == "missing_field":
                name = self._field_to_drop(rng)
                del broken[name]
                key = None if name in self._key_fields else key
            elif kind == "late":  # 2 minutes to 6 hours behind, log-uniform
                behind = np.exp(rng.uniform(np.log(2 * MINUTE_MS), np.log(360 * MINUTE_MS)))
                broken[self._time_field] = iso_ms(np.array([time_ms - int(behind)]))[0]
            elif kind == "future":
                ahead = rng.uniform(1 * DAY_MS, 30 * DAY_MS)
                broken[self._time_field] = iso_ms(np.array([time_ms + int(ahead)]))[0]
            elif kind == "oversized":
                size = int(rng.integers(*OVERSIZED_BYTES))
                broken[self.oversized_field] = ("0123456789abcdef" * (size // 16 + 1))[:size]
            else:
                self._dataset_breakers[kind](broken, rng)
            value = orjson.dumps(broken)
        return GeneratedRecord(key, value, _HEADERS[kind], time_ms)

    def _field_to_drop(self, rng: Rng) -> str:
        """A quarter of the time a key field, a quarter the event time, else any other field; always a
        required one, since dropping an optional field would not break the event."""
        draw = rng.random()
        if draw < 0.25 and self._required_keys:
            return choose(rng, self._required_keys)
        special = {self._time_field, *self._key_fields}
        others = [name for name in self._required if name not in special]
        if (draw < 0.5 or not others) and self._time_field in self._required:
            return self._time_field
        return choose(rng, others or self._required_keys)

    def _non_utf8(self, event: Event, rng: Rng) -> bytes:
        """Either latin-1 text from a legacy sender or the whole JSON sent as UTF-16 with a BOM."""
        if rng.random() < 0.3:
            return orjson.dumps(event).decode().encode("utf-16")
        field = choose(rng, list(self.latin1_texts))
        event[field] = choose(rng, self.latin1_texts[field])
        return orjson.dumps(event).decode().encode("latin-1", errors="replace")


def choose(rng: Rng, options: Sequence[Any]) -> Any:
    """One of ``options``, uniformly; for the rare per-record choices of dirty injection."""
    return options[int(rng.integers(len(options)))]


def categorical(rng: Rng, cdf: np.ndarray, n: int) -> np.ndarray:
    """``n`` draws of indices from a cumulative distribution (last entry 1), vectorised."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def labels(names: Iterable[str | None]) -> np.ndarray:
    """An object array of strings, so fancy indexing yields plain ``str`` on ``tolist``."""
    return np.array(list(names), dtype=object)


def cdf_of(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalised cumulative distribution of non-negative weights."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return cdf / cdf[-1]


def zipf_cdf(rng: Rng, n: int, exponent: float, offset: float) -> np.ndarray:
    """Zipf-Mandelbrot popularity over ``n`` items, with ranks shuffled so ids don't reveal it."""
    weights = 1.0 / (np.arange(n) + 1 + offset) ** exponent
    return cdf_of(weights[rng.permutation(n)])


def uuid4_strings(rng: Rng, n: int) -> list[str]:
    """``n`` random version-4 UUIDs drawn from ``rng``, so they are reproducible."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    t = raw.tobytes().hex()
    return [f"{t[i:i + 8]}-{t[i + 8:i + 12]}-{t[i + 12:i + 16]}-{t[i + 16:i + 20]}-{t[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def _malformed(event: Event, rng: Rng) -> bytes:
    """JSON text no parser accepts: cut short, Python repr, or a trailing comma."""
    value = orjson.dumps(event)
    draw = rng.random()
    if draw < 0.5:
        return value[: int(rng.integers(1, len(value) - 1))]
    if draw < 0.75:
        return repr(event).encode()
    return value[:-1] + b",}"


def _key_function(key_fields: tuple[str, ...]) -> Callable[[Event], bytes]:
    """The Kafka key of an event: its key field values as UTF-8, joined with '|'."""
    if len(key_fields) == 1:
        (only,) = key_fields
        return lambda event: str(event[only]).encode()
    return lambda event: "|".join(str(event[name]) for name in key_fields).encode()

