"""Columns of values for contract fields, drawn to fit each field's type and constraints.

The generic generator builds one column per field (or one per reference table, whose join fields
are drawn together) from the contract alone. A column's fixed choices (which allowed values are
popular, the population of devices or customers behind a key) come from the catalogue rng when it
is built; its values are then drawn ``n`` at a time, vectorised, ready for JSON.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from archlab.contract import FieldSpec, base_type, decimal_digits
from archlab.ingest.generators.base import Rng, categorical, labels, uuid4_strings, zipf_cdf
from archlab.ingest.generators.clock import DAY_MS, iso_ms
from archlab.ingest.generators.regex_strings import RegexSampler

Draw = Callable[[Rng, int], list[Any]]

OPEN_SPAN = 1000.0  # width of a numeric range the contract leaves open on one or both sides
FLOAT_PLACES = 2
DECIMAL_PLACES = 2  # at most; few enough that every value prints exactly as a JSON number
FLOAT_EXACT = 1e9  # decimal values stay below this, where a double still holds every cent
POOL = 200  # distinct values of a free string field
ENTITIES = 1000  # distinct values of a key field: the devices, customers or orders of the stream
NULL_SHARE = 0.1  # of an optional field's values
DATE_SPAN_DAYS = 3 * 365  # dates fall in the three years before the stream starts
TIMESTAMP_SPAN_MS = 30 * DAY_MS  # other timestamps in the month before it


@dataclass(frozen=True)
class Field:
    """A contract field as its column needs it: its spec, the strings read as null in it, the stream's start."""

    name: str
    spec: FieldSpec
    tokens: frozenset[str]
    start_ms: int

    @property
    def kind(self) -> str:
        return base_type(self.spec.type)


def numeric_bounds(spec: FieldSpec) -> tuple[float, float]:
    """The range numbers are drawn from: the contract's bounds, closed by ``OPEN_SPAN`` where open."""
    low, high = spec.min, spec.max
    if low is None and high is None:
        low, high = 0.0, OPEN_SPAN
    elif low is None:
        low = high - OPEN_SPAN  # type: ignore[operator]
    elif high is None:
        high = low + OPEN_SPAN
    limit = magnitude_limit(spec)
    return max(float(low), -limit), min(float(high), limit)  # type: ignore[arg-type]


def magnitude_limit(spec: FieldSpec) -> float:
    """The largest absolute value the field's type holds (for decimals, within ``FLOAT_EXACT``)."""
    kind = base_type(spec.type)
    if kind == "decimal":
        precision, scale = decimal_digits(spec.type)
        return min(10.0 ** (precision - scale) - 10.0**-scale, FLOAT_EXACT)
    return float(2**63 - 1) if kind == "int" else math.inf


def places(spec: FieldSpec) -> int:
    """Decimal places of the generated values of a numeric field."""
    kind = base_type(spec.type)
    if kind == "decimal":
        return min(decimal_digits(spec.type)[1], DECIMAL_PLACES)
    return FLOAT_PLACES if kind == "float" else 0


def round_to(value: float, digits: int, *, up: bool) -> float:
    """``value`` rounded up or down to ``digits`` decimal places (noise below 1e-6 ignored)."""
    scaled = round(value * 10**digits, 6)
    return (math.ceil(scaled) if up else math.floor(scaled)) / 10**digits


def numbers(spec: FieldSpec) -> Draw:
    """Uniform numbers within the field's bounds, with the decimals its type allows."""
    low, high = numeric_bounds(spec)
    digits = places(spec)
    if digits == 0:
        first, last = math.ceil(low), max(math.floor(high), math.ceil(low))
        return lambda rng, n: rng.integers(first, last, endpoint=True, size=n).tolist()
    first, last = round_to(low, digits, up=True), round_to(high, digits, up=False)
    return lambda rng, n: np.clip(np.round(rng.uniform(first, last, n), digits), first, last).tolist()


def popular(values: Sequence[Any], catalogue: Rng, exponent: float = 1.0) -> Draw:
    """Values drawn with skewed popularity (a few common, many rare), fixed by the catalogue rng."""
    pool = labels(values) if values and isinstance(values[0], str) else np.array(values, dtype=object)
    cdf = zipf_cdf(catalogue, len(pool), exponent=exponent, offset=1.0)
    return lambda rng, n: pool[categorical(rng, cdf, n)].tolist()


def string_pool(field: Field, catalogue: Rng, size: int) -> list[str]:
    """Up to ``size`` distinct strings the field accepts: drawn from its regex, or labels like ``site-7``."""
    sampler, longest = regex_sampler(field.spec), field.spec.max_length
    if sampler is None:
        return [label(field.name, i, longest) for i in range(1, size + 1)]
    drawn = dict.fromkeys(sampler.sample(catalogue, 3 * size, longest))
    pool = [text for text in drawn if text not in field.tokens][:size]
    return pool or sampler.sample(catalogue, 1, longest)


def label(name: str, index: int, max_length: int | None) -> str:
    """A readable distinct value, ``<name>-<index>``, or the index in base 36 when that is too long."""
    text = f"{name}-{index}"
    if max_length is None or len(text) <= max_length:
        return text
    digits = ""
    while index:
        index, rest = divmod(index, 36)
        digits = (string.digits + string.ascii_lowercase)[rest] + digits
    return digits[-max_length:]


def regex_sampler(spec: FieldSpec) -> RegexSampler | None:
    """A sampler for the field's regex; None without one, or for RE2 syntax Python cannot read."""
    if spec.regex is None:
        return None
    try:
        return RegexSampler(spec.regex)
    except ValueError:
        return None  # the contract check still applies: such values are discarded, never sent clean


def unique(field: Field, catalogue: Rng) -> Draw:
    """A value per event that no other event has: the dedup key of a stream of distinct events."""
    spec = field.spec
    if field.kind == "int" and spec.allowed is None:
        low = math.ceil(spec.min) if spec.min is not None else 1
        high = math.floor(spec.max) if spec.max is not None else 2**62
        span = max(high - low + 1, 1)
        issued = [int(catalogue.integers(0, span))]

        def count(rng: Rng, n: int) -> list[int]:
            first, issued[0] = issued[0], issued[0] + n
            return [low + (first + i) % span for i in range(n)]

        return count
    if field.kind != "string" or spec.allowed is not None:
        return plain(field, catalogue)
    sampler = regex_sampler(spec)
    if sampler is None:
        return lambda rng, n: [text[: spec.max_length] for text in uuid4_strings(rng, n)]
    return lambda rng, n: sampler.sample(rng, n, spec.max_length)


def entities(field: Field, catalogue: Rng) -> Draw:
    """A population of ``ENTITIES`` values, some far more active than others: what a key names."""
    spec = field.spec
    if spec.allowed is None and field.kind == "string":
        return popular(string_pool(field, catalogue, ENTITIES), catalogue, exponent=0.8)
    if spec.allowed is None and field.kind == "int":
        low, high = numeric_bounds(spec) if spec.min is not None or spec.max is not None else (1, 10 * ENTITIES)
        first = math.ceil(low)
        last = max(math.floor(high), first)
        chosen = first + catalogue.choice(last - first + 1, size=min(ENTITIES, last - first + 1), replace=False)
        return popular(chosen.tolist(), catalogue, exponent=0.8)
    return plain(field, catalogue)


def plain(field: Field, catalogue: Rng) -> Draw:
    """Values of a field that plays no special part: its allowed values, its regex, or its type's range."""
    spec = field.spec
    if spec.allowed is not None:
        low, high = numeric_bounds(spec) if field.kind == "int" else (-math.inf, math.inf)
        fitting = [v for v in spec.allowed if v not in field.tokens and (isinstance(v, str) or low <= v <= high)]
        return popular(fitting or spec.allowed, catalogue)
    if field.kind == "string":
        return popular(string_pool(field, catalogue, POOL), catalogue)
    if field.kind == "bool":
        share = float(catalogue.uniform(0.2, 0.8))
        return lambda rng, n: (rng.random(n) < share).tolist()
    if field.kind == "date":
        first_day = field.start_ms // DAY_MS - DATE_SPAN_DAYS
        return lambda rng, n: np.datetime_as_string(
            (first_day + rng.integers(0, DATE_SPAN_DAYS, size=n)).astype("datetime64[D]")
        ).tolist()
    if field.kind == "timestamp":
        return lambda rng, n: iso_ms(field.start_ms - rng.integers(0, TIMESTAMP_SPAN_MS, size=n))
    return numbers(spec)


def with_nulls(draw: Draw, share: float = NULL_SHARE) -> Draw:
    """An optional field: a share of its values are JSON null."""

    def drawn(rng: Rng, n: int) -> list[Any]:
        values, missing = draw(rng, n), rng.random(n) < share
        return [None if gone else value for value, gone in zip(values, missing.tolist(), strict=True)]

    return drawn


def reference_rows(table: pa.Table, columns: Sequence[str], kinds: Sequence[str], catalogue: Rng) -> Callable[
    [Rng, int], list[list[Any]]
]:
    """Rows of a reference table, popular ones more often: the join fields of events that must match it."""
    values = [[json_value(v, kind) for v in table.column(c).to_pylist()] for c, kind in zip(columns, kinds, strict=True)]
    pools = [np.array(column, dtype=object) for column in values]
    cdf = zipf_cdf(catalogue, table.num_rows, exponent=0.8, offset=1.0)

    def draw(rng: Rng, n: int) -> list[list[Any]]:
        rows = categorical(rng, cdf, n)
        return [pool[rows].tolist() for pool in pools]

    return draw


def json_value(value: Any, kind: str) -> Any:
    """A typed reference value as the event would carry it in JSON."""
    if isinstance(value, datetime):
        return iso_ms(np.array([int(value.timestamp() * 1000)]))[0]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if kind == "decimal" and value == value.to_integral_value() else float(value)
    return value
