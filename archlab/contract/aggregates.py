"""What gold computes for a dataset: tumbling windows (aggregates) of measures, and their validation.

An aggregate reads silver columns only, so its dimensions and measure fields are checked against
the silver columns the rest of the contract declares (:func:`aggregate_problems`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from archlab.contract.types import KEY_TYPES, NUMERIC_TYPES, Name, base_type, decimal_digits, parse_duration

GOLD_COLUMNS = ("aggregate", "window_start", "window_end", "events", "late_events", "final", "revision", "watermark")
"""Columns of every gold row besides its dimensions and measures."""


class Measure(BaseModel):
    """One figure of an aggregate window, e.g. ``{name: revenue_eur, fn: sum, field: amount_eur}``.

    ``ratio`` divides two other measures of the same aggregate. ``unit`` says what the figure counts in
    (an ISO 4217 currency such as ``EUR`` makes it money), so that readers format it without guessing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    fn: Literal["count", "count_distinct", "sum", "avg", "min", "max", "count_if", "ratio"]
    field: str | None = None
    condition: str | None = None
    of: tuple[str, str] | None = None
    unit: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _arguments_fit_the_function(self) -> Measure:
        wants_field = self.fn in ("count_distinct", "sum", "avg", "min", "max")
        if wants_field and self.field is None:
            raise ValueError(f"{self.fn} needs a field")
        if self.fn in ("count_if", "ratio") and self.field is not None:
            raise ValueError(f"{self.fn} takes no field")
        if (self.fn == "count_if") != (self.condition is not None):
            raise ValueError("condition is for count_if, and count_if needs one")
        if (self.fn == "ratio") != (self.of is not None):
            raise ValueError("of: [numerator, denominator] is for ratio, and ratio needs it")
        return self


class Aggregate(BaseModel):
    """Tumbling event-time windows of one size, grouped by dimensions, with measures.

    ``grace`` is how far behind the highest event time a window stays open for late events;
    ``retention`` is how long after closing a window is remembered, so that an event arriving even
    later still marks it as having missed late data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    window: Annotated[timedelta, BeforeValidator(parse_duration), Field(gt=timedelta(0), le=timedelta(days=1))]
    grace: Annotated[timedelta, BeforeValidator(parse_duration), Field(ge=timedelta(0))] = timedelta(minutes=10)
    retention: Annotated[timedelta, BeforeValidator(parse_duration), Field(ge=timedelta(0))] = timedelta(hours=1)
    group_by: list[str] = []
    measures: Annotated[list[Measure], Field(min_length=1)]
    description: str = ""

    @field_validator("window")
    @classmethod
    def _divides_a_day(cls, value: timedelta) -> timedelta:
        if timedelta(days=1) % value or value % timedelta(milliseconds=1):
            raise ValueError("a window must divide a day into whole windows, e.g. 1m, 5m, 15m, 1h, 1d")
        return value

    @property
    def window_ms(self) -> int:
        return int(self.window / timedelta(milliseconds=1))

    @property
    def grace_ms(self) -> int:
        return int(self.grace / timedelta(milliseconds=1))

    @property
    def retention_ms(self) -> int:
        return int(self.retention / timedelta(milliseconds=1))


def measure_type(measure: Measure, columns: dict[str, str]) -> str | None:
    """The contract type of a measure's result (None when its field is unknown)."""
    if measure.fn in ("count", "count_distinct", "count_if"):
        return "int"
    if measure.fn in ("avg", "ratio"):
        return "float"
    if measure.field not in columns:
        return None
    source = columns[measure.field]
    if measure.fn == "sum" and base_type(source) == "decimal":
        return f"decimal(38,{decimal_digits(source)[1]})"
    return source


def aggregate_problems(aggregates: list[Aggregate], columns: dict[str, str]) -> list[str]:
    """Dimensions and measure fields must be silver ``columns`` (name -> contract type); names and
    output types must agree across aggregates."""
    problems = []
    names = [a.name for a in aggregates]
    problems += [f"aggregates.{n}: aggregate name used more than once" for n in sorted(set(names)) if names.count(n) > 1]
    outputs: dict[str, tuple[str, str]] = {}  # gold column -> (type, where)
    units: dict[str, tuple[str | None, str]] = {}  # measure name -> (unit, where)
    for aggregate in aggregates:
        where = f"aggregates.{aggregate.name}"
        for dim in aggregate.group_by:
            if dim not in columns:
                problems.append(f"{where}.group_by: {dim!r} is not a silver column")
            elif columns[dim] not in KEY_TYPES:
                problems.append(f"{where}.group_by: {dim!r} is {columns[dim]}; a dimension must be string, int or bool")
        measures = {m.name: m for m in aggregate.measures}
        for measure in aggregate.measures:
            at = f"{where}.measures.{measure.name}"
            if measure.field is not None and measure.field not in columns:
                problems.append(f"{at}: field {measure.field!r} is not a silver column")
                continue
            if measure.fn == "count_distinct" and columns[measure.field] not in KEY_TYPES:
                problems.append(f"{at}: count_distinct counts string, int or bool values, {measure.field!r} is {columns[measure.field]}")
            if measure.fn in ("sum", "avg") and base_type(columns[measure.field]) not in NUMERIC_TYPES:
                problems.append(f"{at}: {measure.fn} needs a number, {measure.field!r} is {columns[measure.field]}")
            if measure.fn in ("min", "max") and base_type(columns[measure.field]) not in NUMERIC_TYPES:
                problems.append(f"{at}: {measure.fn} needs a number, {measure.field!r} is {columns[measure.field]}")
            if measure.of is not None:
                problems += [f"{at}.of: {name!r} is not a measure of {aggregate.name}"
                             for name in measure.of if name not in measures or name == measure.name]
            if measure.name in GOLD_COLUMNS:
                problems.append(f"{at}: name {measure.name!r} is reserved for gold bookkeeping")
            unit = units.setdefault(measure.name, (measure.unit, at))
            if unit[0] != measure.unit:
                problems.append(f"{at}: unit {measure.unit!r}, but {unit[1]} of the same name has {unit[0]!r}")
            out = measure_type(measure, columns)
            if out is not None:
                previous = outputs.setdefault(measure.name, (out, at))
                if previous[0] != out:
                    problems.append(f"{at}: gives {out}, but {previous[1]} of the same name gives {previous[0]}")
        for dim in aggregate.group_by:
            if dim in outputs:
                problems.append(f"{where}.group_by: {dim!r} is also a measure name")
    return problems
