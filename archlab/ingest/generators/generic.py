"""A synthetic stream for any contract: the generator of every dataset without a hand-written one.

Each field's values are drawn from what the contract says about it (type, bounds, allowed values,
regex, max length, null tokens; optional fields are sometimes null). The Kafka key fields name a
population of entities with skewed activity, the first dedup key field is unique per event, the
join fields of each enrichment take their values from a row of its reference table so that
enrichment matches, and the event time advances on a Poisson clock like the hand-written streams.

What no single field says (the contract's rules, derived fields, reference lookups) is met by
rejection: every block of candidates goes through the silver refiner, the contract's own checks,
as if sent at the clock's current time, and only the events it accepts are sent as clean (their
event times, drawn afterwards, are at most one block later). A contract whose rules reject every candidate
still gets a stream (its events are then quarantined) and a warning, rather than a producer that
stalls. Dirty kinds the contract cannot express (``out_of_range`` without bounds, ``unknown_enum``
without allowed values or a regex…) are not injected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import structlog

from archlab.contract import Contract, base_type, load_references
from archlab.ingest.generators.base import OVERSIZED_BYTES, DatasetGenerator, DirtyRates, Event, Rng, choose
from archlab.ingest.generators.clock import ArrivalClock, flat_profile, iso_ms
from archlab.ingest.generators.fields import (
    Draw,
    Field,
    entities,
    magnitude_limit,
    places,
    plain,
    reference_rows,
    round_to,
    unique,
    with_nulls,
)
from archlab.pipeline.silver.refine import RAW_SCHEMA, Refiner

log = structlog.get_logger(__name__)

Columns = Callable[[Rng, int], list[list[Any]]]

BLOCK = 512  # accepted events per block, about
MAX_OVERSAMPLING = 64  # candidates per wanted event when the contract's rules accept few
BREAK_BY = (1.0, 100.0)  # how far outside its bounds an out-of-range number is put
WRONG_TYPE_TEXTS: dict[str, tuple[str, ...]] = {
    "int": ("twelve", "12 units"),
    "float": ("about 3", "12.5 kg"),
    "decimal": ("about 3", "12.50 EUR"),
    "bool": ("yes", "maybe"),
    "date": ("31/12/2024", "yesterday"),
    "timestamp": ("2025-03-03 10:00:00", "yesterday"),  # no zone: ambiguous, refused
}
UNKNOWN_TEXTS = ("unknown", "other", "#n/a#", "?", "~")
LATIN1_TEXTS = ("café-crème", "größe-äöü", "señal-ñ")


class GenericGenerator(DatasetGenerator):
    """Events that fit a contract, drawn from the contract alone."""

    def __init__(self, contract: Contract, contracts_dir: Path, seed: int, start_ms: int,
                 events_per_second: float, dirty: DirtyRates) -> None:
        self.dataset = contract.dataset
        self.fields = tuple(contract.fields)
        self._contract = contract
        self._tokens = {name: frozenset(contract.null_tokens_of(name)) for name in contract.fields}
        self._wrong_types = self._wrong_type_targets()
        self._ranges = self._range_targets()
        self._enums = self._enum_targets()
        self.oversized_field = self._oversized_target()
        self.latin1_texts = {self.oversized_field: LATIN1_TEXTS}
        super().__init__(contract, seed, self._possible(dirty))
        self._clock = ArrivalClock(start_ms, events_per_second, flat_profile, 1.0)
        self._now_ms = start_ms
        self._columns = self._build_columns(contracts_dir, start_ms)
        self._refiner = Refiner(contract, contracts_dir)
        self._acceptance = 1.0  # expected share of accepted candidates, to size the next block
        self._drawn = self._kept = 0
        self._warned = False

    @property
    def acceptance(self) -> float:
        """Share of all candidates so far that the contract accepted: how well its rules and the draws agree."""
        return self._kept / self._drawn if self._drawn else 1.0

    # --- clean events ----------------------------------------------------------------------------
    def _build_columns(self, contracts_dir: Path, start_ms: int) -> list[tuple[tuple[str, ...], Columns]]:
        """One column per field, or per reference table for its join fields; the event time is the clock's."""
        contract, catalogue = self._contract, self._catalogue_rng
        claimed = {contract.event_time}
        columns: list[tuple[tuple[str, ...], Columns]] = []
        tables = load_references(contract, contracts_dir)
        for enrichment in contract.enrichment:
            table = tables[enrichment.name]
            names = tuple(name for name in enrichment.on if name not in claimed)
            if names and table.num_rows:
                kinds = [base_type(contract.fields[name].type) for name in names]
                references = [enrichment.on[name] for name in names]
                columns.append((names, reference_rows(table, references, kinds, catalogue)))
                claimed.update(names)
        dedup = contract.dedup
        distinct = None  # the event time, when part of the dedup key, already tells events apart
        if dedup is not None and contract.event_time not in dedup.key:
            distinct = next((name for name in dedup.key if name not in claimed), None)
        for name, spec in contract.fields.items():
            if name in claimed:
                continue
            field = Field(name, spec, self._tokens[name], start_ms)
            role = unique if name == distinct else entities if name in contract.key else plain
            draw = role(field, catalogue)
            if not spec.required and name not in contract.key:
                draw = with_nulls(draw)
            columns.append(((name,), _single(draw)))
        return columns

    def _candidates(self, n: int) -> list[Event]:
        values: dict[str, list[Any]] = {self._time_field: [iso_ms(np.array([self._now_ms]))[0]] * n}
        for names, draw in self._columns:
            values.update(zip(names, draw(self._rng, n), strict=True))
        order = self.fields
        return [dict(zip(order, row, strict=True)) for row in zip(*(values[name] for name in order), strict=True)]

    def _clean_block(self) -> tuple[np.ndarray, list[Event]]:
        wanted = math.ceil(BLOCK / self._acceptance)
        events = self._candidates(wanted)
        accepted = self._accepted(events)
        self._acceptance = max(len(accepted) / wanted, 1 / MAX_OVERSAMPLING)
        self._drawn, self._kept = self._drawn + wanted, self._kept + len(accepted)
        if accepted:
            events = [events[i] for i in accepted]
        else:
            events = events[:BLOCK]
            if not self._warned:
                self._warned = True
                log.warning("the contract refuses every generated event; sending them anyway, to quarantine",
                            dataset=self.dataset, candidates=wanted)
        times = self._clock.advance(self._rng.standard_exponential(len(events)))
        for event, stamp in zip(events, iso_ms(times), strict=True):
            event[self._time_field] = stamp
        self._now_ms = int(times[-1])
        return times, events

    def _accepted(self, events: list[Event]) -> list[int]:
        """Indices of the events the contract's checks accept, sent at the clock's current time."""
        n = len(events)
        raw = pa.table(
            [
                pa.array(np.zeros(n, dtype=np.int32)),
                pa.array(np.arange(n, dtype=np.int64)),
                pa.nulls(n, pa.binary()),
                pa.array([orjson.dumps(event) for event in events], pa.binary()),
                pa.array(np.full(n, self._now_ms, dtype=np.int64)).cast(pa.timestamp("ms", tz="UTC")),
            ],
            schema=RAW_SCHEMA,
        )
        return self._refiner.refine(raw).valid["_source_offset"].to_pylist()

    # --- dirty events --------------------------------------------------------------------------------
    def _possible(self, dirty: DirtyRates) -> DirtyRates:
        """``dirty`` without the kinds this contract gives no way to inject."""
        impossible = {
            "out_of_range": not self._ranges,
            "unknown_enum": not self._enums,
            "missing_field": not any(spec.required for spec in self._contract.fields.values()),
            "oversized": self._contract.max_payload_bytes >= OVERSIZED_BYTES[0],
        }
        off = [kind for kind, skip in impossible.items() if skip and getattr(dirty, kind) > 0]
        if off:
            log.info("dirty kinds this contract cannot express are not injected", dataset=self.dataset, kinds=off)
        return dirty.model_copy(update=dict.fromkeys(off, 0.0))

    def _wrong_type_targets(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Fields and values of the wrong JSON type for them; the key and event time only if nothing else."""
        contract = self._contract
        targets = []
        for name, spec in contract.fields.items():
            kind = base_type(spec.type)
            values = (404, 12.5) if kind == "string" else tuple(
                text for text in WRONG_TYPE_TEXTS[kind] if text not in self._tokens[name]
            )
            if values:
                targets.append((name, values))
        special = {contract.event_time, *contract.key}
        return [target for target in targets if target[0] not in special] or targets

    def _range_targets(self) -> list[tuple[str, str]]:
        """(field, bound) pairs a value can be put outside of: numbers' min and max, strings' max_length."""
        targets = []
        for name, spec in self._contract.fields.items():
            kind, room = base_type(spec.type), magnitude_limit(spec) - BREAK_BY[1] - 1
            if spec.min is not None and spec.min > -room:
                targets.append((name, "min"))
            if spec.max is not None and spec.max < room:
                targets.append((name, "max"))
            if kind == "string" and spec.max_length is not None and spec.regex is None and spec.allowed is None:
                targets.append((name, "max_length"))
        return targets

    def _enum_targets(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Fields and values outside their allowed set; without any such field, values that miss a regex."""
        listed, patterned = [], []
        for name, spec in self._contract.fields.items():
            if spec.allowed is not None and base_type(spec.type) == "int":
                low = math.ceil(spec.min) if spec.min is not None else min(spec.allowed) - 3  # type: ignore[type-var]
                high = math.floor(spec.max) if spec.max is not None else max(spec.allowed) + 3  # type: ignore[type-var]
                outside = [v for v in range(low, min(high, low + 1000) + 1) if v not in spec.allowed][:3]
                listed += [(name, tuple(outside))] if outside else []
            elif spec.allowed is not None:
                variants = [*UNKNOWN_TEXTS, *(str(v).upper() for v in spec.allowed), *(f"{v}_x" for v in spec.allowed)]
                outside = [v for v in variants if v not in spec.allowed and self._fits(name, v)][:3]
                listed += [(name, tuple(outside))] if outside else []
            elif spec.regex is not None:
                outside = [v for v in UNKNOWN_TEXTS if self._fits(name, v) and not _matches(spec.regex, v)][:3]
                patterned += [(name, tuple(outside))] if outside else []
        return listed or patterned

    def _fits(self, name: str, text: str) -> bool:
        """Whether ``text`` is no null token and no longer than the field allows."""
        longest = self._contract.fields[name].max_length
        return text not in self._tokens[name] and (longest is None or len(text) <= longest)

    def _oversized_target(self) -> str:
        contract = self._contract
        others = [name for name in contract.fields if name not in {contract.event_time, *contract.key}]
        texts = [name for name in others if base_type(contract.fields[name].type) == "string"]
        return (texts or others or [contract.event_time])[0]

    def _wrong_type(self, event: Event, rng: Rng) -> None:
        name, values = choose(rng, self._wrong_types)
        event[name] = choose(rng, values)

    def _out_of_range(self, event: Event, rng: Rng) -> None:
        name, bound = choose(rng, self._ranges)
        spec = self._contract.fields[name]
        if bound == "max_length":
            longest = spec.max_length or 0
            event[name] = ("overlong-" * (longest // 9 + 2))[: longest + int(rng.integers(1, 9))]
            return
        gap, digits = rng.uniform(*BREAK_BY), places(spec)
        if bound == "min":
            event[name] = math.ceil(spec.min) - math.ceil(gap) if digits == 0 else round_to(spec.min - gap, digits, up=False)
        else:
            event[name] = math.floor(spec.max) + math.ceil(gap) if digits == 0 else round_to(spec.max + gap, digits, up=True)

    def _unknown_enum(self, event: Event, rng: Rng) -> None:
        name, values = choose(rng, self._enums)
        event[name] = choose(rng, values)


def _single(draw: Draw) -> Columns:
    return lambda rng, n: [draw(rng, n)]


def _matches(pattern: str, text: str) -> bool:
    """Whether ``text`` contains a match of ``pattern``; a regex Python cannot read counts as matching."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True
