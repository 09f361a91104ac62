"""The data contract's model: a dataset's fields, enrichment, derived fields, rules, de-duplication
and aggregates, validated by pydantic as far as they can be without a database.

A contract is one YAML file per dataset under ``contracts/`` (every key is documented in
``contracts/README.md``); :mod:`archlab.contract.loading` reads it into :class:`Contract`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from archlab.contract.aggregates import GOLD_COLUMNS, Aggregate, aggregate_problems, measure_type
from archlab.contract.objectives import Objectives
from archlab.contract.types import NUMERIC_TYPES, Name, TypeName, arrow_type, base_type, parse_duration
from archlab.core.errors import UserError

DEFAULT_NULL_TOKENS = ("", "NA", "N/A", "null")
MIB = 1024 * 1024
ENGINE_CHECKS = ("kafka_timestamp", "size", "utf8", "json")
"""Checks of the record as a whole, made before any field is looked at; rules may not take these names."""
KAFKA_TIMESTAMP = "_kafka_timestamp"
"""The raw record's Kafka timestamp (its arrival time), visible to rules and derived fields."""
LINEAGE = pa.schema(
    [
        pa.field("_contract_version", pa.int32(), nullable=False),
        pa.field("_source_partition", pa.int32(), nullable=False),
        pa.field("_source_offset", pa.int64(), nullable=False),
        pa.field(KAFKA_TIMESTAMP, pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


class ContractError(UserError, ValueError):
    """A contract file that cannot be used; the message names the file, the place and the problem."""

    label = "contract error"


class FieldSpec(BaseModel):
    """One field of an event: its type, whether it may be null, how it is coerced and constrained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: TypeName
    required: bool = True
    description: str = ""
    null_tokens: list[str] | None = None
    """Strings read as null; ``None`` takes the contract's list."""
    coerce: bool = True
    """Accept numbers, booleans and epoch-millisecond timestamps sent as other JSON types."""
    decimal_comma: bool = False
    """Accept ``"12,99"`` for 12.99 (float and decimal fields; needs ``coerce``)."""
    min: int | float | None = None
    max: int | float | None = None
    allowed: Annotated[list[str | int], Field(min_length=1)] | None = None
    regex: str | None = None
    max_length: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _constraints_fit_the_type(self) -> FieldSpec:
        kind = base_type(self.type)
        if (self.min is not None or self.max is not None) and kind not in NUMERIC_TYPES:
            raise ValueError(f"min/max need a numeric type, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.allowed is not None:
            if kind not in ("string", "int"):
                raise ValueError(f"allowed needs type string or int, not {self.type}")
            wanted = str if kind == "string" else int
            wrong = [value for value in self.allowed if not isinstance(value, wanted)]
            if wrong:
                raise ValueError(f"allowed values {wrong} are not of type {self.type}")
        if (self.regex is not None or self.max_length is not None) and kind != "string":
            raise ValueError(f"regex/max_length need type string, not {self.type}")
        if self.decimal_comma and (kind not in ("float", "decimal") or not self.coerce):
            raise ValueError("decimal_comma needs a float or decimal field with coerce: true")
        return self

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.type)


class Enrichment(BaseModel):
    """A reference table joined LEFT to every batch; its columns are reached as ``<name>.<column>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    path: str
    """CSV (with a header) or Parquet file, relative to the contracts folder."""
    on: Annotated[dict[str, str], Field(min_length=1)]
    """Event field -> reference column; the reference must hold each key combination at most once."""
    columns: Annotated[dict[Name, TypeName], Field(min_length=1)]
    """Reference column -> contract type; silver gets them as ``<name>_<column>``."""
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _bare_on_key(cls, data: object) -> object:
        """YAML 1.1 reads a bare ``on:`` key as ``true``; take it back as ``on``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @field_validator("path")
    @classmethod
    def _relative_table_file(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"path {value!r} must be relative to the contracts folder, without '..'")
        if path.suffix not in (".csv", ".parquet"):
            raise ValueError(f"path {value!r} must be a .csv or .parquet file")
        return value

    def output_name(self, column: str) -> str:
        """The silver column that carries a reference column."""
        return f"{self.name}_{column}"


class Derived(BaseModel):
    """A column computed from the event: a DuckDB expression cast to a contract type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    sql: Annotated[str, Field(min_length=1)]
    type: TypeName
    description: str = ""


class Rule(BaseModel):
    """A row-level check: a DuckDB boolean expression that is true (or null) for a good row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    sql: Annotated[str, Field(min_length=1)]
    action: Literal["quarantine", "warn"] = "quarantine"
    description: str = ""


class Dedup(BaseModel):
    """Which fields identify a re-sent event, and how long a key is remembered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[list[str], Field(min_length=1)]
    horizon: Annotated[timedelta, BeforeValidator(parse_duration), Field(gt=timedelta(0))]


class Contract(BaseModel):
    """A dataset: its schema, event time and Kafka key, and the checks that sort its events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    description: str = ""
    event_time: str
    key: Annotated[list[str], Field(min_length=1)]
    fields: Annotated[dict[Name, FieldSpec], Field(min_length=1)]
    null_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_NULL_TOKENS))
    max_payload_bytes: Annotated[int, Field(ge=1024)] = MIB
    enrichment: list[Enrichment] = []
    derived: list[Derived] = []
    rules: list[Rule] = []
    dedup: Dedup | None = None
    aggregates: list[Aggregate] = []
    objectives: Objectives = Objectives()

    @model_validator(mode="after")
    def _references_exist(self) -> Contract:
        problems = []
        if self.event_time not in self.fields:
            problems.append(f"event_time: field {self.event_time!r} is not among the fields")
        elif self.fields[self.event_time].type != "timestamp":
            problems.append(f"event_time: field {self.event_time!r} must have type timestamp")
        problems += [
            f"key: field {name!r} is not among the fields" for name in self.key if name not in self.fields
        ]
        if self.dedup is not None:
            problems += [
                f"dedup.key: field {name!r} is not among the fields"
                for name in self.dedup.key
                if name not in self.fields
            ]
        for spec in self.enrichment:
            problems += [
                f"enrichment.{spec.name}.on: field {name!r} is not among the fields"
                for name in spec.on
                if name not in self.fields
            ]
        seen: dict[str, str] = {}
        for where, name in self._column_names():
            if name in seen:
                problems.append(f"{where}: name {name!r} is already used by {seen[name]}")
            seen.setdefault(name, where)
        rule_names = [rule.name for rule in self.rules]
        for name in sorted({name for name in rule_names if rule_names.count(name) > 1}):
            problems.append(f"rules.{name}: rule name used more than once")
        problems += [
            f"rules.{name}: {name!r} is a built-in check name" for name in rule_names if name in ENGINE_CHECKS
        ]
        problems += aggregate_problems(self.aggregates, dict(self.silver_types()))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def silver_types(self) -> list[tuple[str, str]]:
        """Every silver column a gold aggregate may read, with its contract type."""
        types = [(name, spec.type) for name, spec in self.fields.items()]
        types += [(spec.name, spec.type) for spec in self.derived]
        types += [(spec.output_name(col), t) for spec in self.enrichment for col, t in spec.columns.items()]
        return types

    @cached_property
    def gold_schema(self) -> pa.Schema:
        """Schema of every gold row of the dataset: key columns, every dimension and measure of any
        aggregate (null where an aggregate has no such column), then the window's bookkeeping."""
        columns = dict(self.silver_types())
        dims: dict[str, pa.DataType] = {}
        measures: dict[str, pa.DataType] = {}
        for aggregate in self.aggregates:
            for dim in aggregate.group_by:
                dims.setdefault(dim, arrow_type(columns[dim]))
            for measure in aggregate.measures:
                measures.setdefault(measure.name, arrow_type(measure_type(measure, columns) or "float"))
        return pa.schema(
            [
                pa.field("aggregate", pa.string(), nullable=False),
                pa.field("window_start", pa.timestamp("ms", tz="UTC"), nullable=False),
                pa.field("window_end", pa.timestamp("ms", tz="UTC"), nullable=False),
                *(pa.field(name, type_) for name, type_ in dims.items()),
                *(pa.field(name, type_) for name, type_ in measures.items()),
                pa.field("events", pa.int64(), nullable=False),
                pa.field("late_events", pa.int64(), nullable=False),
                pa.field("final", pa.bool_(), nullable=False),
                pa.field("revision", pa.int64(), nullable=False),
                pa.field("watermark", pa.timestamp("ms", tz="UTC")),
            ]
        )

    @cached_property
    def gold_inputs(self) -> pa.Schema:
        """The silver columns the aggregates read: event time, dimensions, measure fields, and any
        column named in a ``count_if`` condition (a word match: a superset is harmless)."""
        words = {w for a in self.aggregates for m in a.measures if m.condition for w in re.findall(r"\w+", m.condition)}
        needed = {self.event_time} | words
        for aggregate in self.aggregates:
            needed.update(aggregate.group_by)
            needed.update(m.field for m in aggregate.measures if m.field)
        return pa.schema([f for f in self.silver_schema if f.name in needed])

    def aggregate(self, name: str) -> Aggregate:
        for aggregate in self.aggregates:
            if aggregate.name == name:
                return aggregate
        raise KeyError(name)

    def aggregate_schema(self, name: str) -> pa.Schema:
        """The columns of ``gold_schema`` one aggregate's rows have: the bookkeeping, its dimensions and
        its measures (the columns of its gold table, the partition aside)."""
        aggregate = self.aggregate(name)
        own = {*GOLD_COLUMNS, *aggregate.group_by, *(m.name for m in aggregate.measures)}
        return pa.schema([f for f in self.gold_schema if f.name in own])

    def _column_names(self) -> list[tuple[str, str]]:
        """Every name a batch column or SQL scope gets, with where it is declared."""
        names = [(f"fields.{name}", name) for name in self.fields]
        names += [(f"derived.{spec.name}", spec.name) for spec in self.derived]
        for spec in self.enrichment:
            names.append((f"enrichment.{spec.name}", spec.name))
            names += [
                (f"enrichment.{spec.name}.columns.{col}", spec.output_name(col)) for col in spec.columns
            ]
        return names

    def null_tokens_of(self, name: str) -> list[str]:
        """The strings read as null in field ``name``."""
        own = self.fields[name].null_tokens
        return self.null_tokens if own is None else own

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The typed schema of the event fields, in contract order."""
        return pa.schema(
            [
                pa.field(name, spec.arrow_type, nullable=not spec.required)
                for name, spec in self.fields.items()
            ]
        )

    @cached_property
    def silver_schema(self) -> pa.Schema:
        """Schema of a valid event: fields, derived fields, enrichment columns, then lineage."""
        derived = [pa.field(spec.name, arrow_type(spec.type)) for spec in self.derived]
        enriched = [
            pa.field(spec.output_name(col), arrow_type(type_name))
            for spec in self.enrichment
            for col, type_name in spec.columns.items()
        ]
        return pa.schema([*self.arrow_schema, *derived, *enriched, *LINEAGE])

