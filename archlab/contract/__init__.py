"""The data contract: the only place a dataset is described.

A contract is one YAML file per dataset under ``contracts/`` (every key is documented in
``contracts/README.md``). It is validated when a service starts, so a broken contract stops the
service with one line per problem: ``<file>: <field or rule>: <problem>``. Besides the structure,
loading checks what only a database can: each rule and derived field is bound by DuckDB against
an empty table with the contract's columns, and each reference table is read and typed.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import duckdb
import pyarrow as pa
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_DECIMAL_SQL = re.compile(r"^DECIMAL\(\d+,\d+\)$")
SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}
_SQL_TYPES = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
}
NUMERIC_TYPES = ("int", "float", "decimal")
KEY_TYPES = ("string", "int", "bool")
"""Types whose values keep their identity through JSON: gold dimensions and distinct-counted fields."""
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

_NAME = r"^[a-z][a-z0-9_]*$"  # plain SQL identifiers; a leading underscore is kept for lineage columns
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file, the place and the problem."""


def _known_type(value: str) -> str:
    if value in SIMPLE_TYPES:
        return value
    match = _DECIMAL.match(value)
    if not match:
        allowed = ", ".join([*SIMPLE_TYPES, "decimal(p,s)"])
        raise ValueError(f"unknown type {value!r}; allowed: {allowed}")
    precision, scale = int(match[1]), int(match[2])
    if not 1 <= precision <= 38 or scale > precision:
        raise ValueError(f"decimal({precision},{scale}) needs 1 <= precision <= 38 and scale <= precision")
    return f"decimal({precision},{scale})"


TypeName = Annotated[str, AfterValidator(_known_type)]
"""A contract type: string, int, float, bool, timestamp, date or decimal(p,s)."""
Name = Annotated[str, Field(pattern=_NAME)]


def arrow_type(type_name: str) -> pa.DataType:
    """The Arrow type of a (validated) contract type."""
    if type_name in SIMPLE_TYPES:
        return SIMPLE_TYPES[type_name]
    precision, scale = decimal_digits(type_name)
    return pa.decimal128(precision, scale)


def sql_type(type_name: str) -> str:
    """The DuckDB type of a (validated) contract type."""
    if type_name in _SQL_TYPES:
        return _SQL_TYPES[type_name]
    precision, scale = decimal_digits(type_name)
    return f"DECIMAL({precision},{scale})"


def decimal_digits(type_name: str) -> tuple[int, int]:
    """Precision and scale of a ``decimal(p,s)`` type."""
    match = _DECIMAL.match(type_name)
    if match is None:
        raise ValueError(f"{type_name!r} is not a decimal type")
    return int(match[1]), int(match[2])


def base_type(type_name: str) -> str:
    """The type without its parameters: ``decimal(12,2)`` -> ``decimal``."""
    return "decimal" if type_name.startswith("decimal(") else type_name


def parse_duration(value: object) -> object:
    """``90s``, ``15m``, ``24h``, ``7d`` or ``500ms`` as a timedelta; other values are left to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError(f"invalid duration {value!r}; write a whole number and a unit: ms, s, m, h or d")
        return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
    return value


GOLD_COLUMNS = ("aggregate", "window_start", "window_end", "events", "late_events", "final", "revision", "watermark")
"""Columns of every gold row besides its dimensions and measures."""


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


def quote(name: str) -> str:
    """A SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


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


MEASURE_FUNCTIONS = ("count", "count_distinct", "sum", "avg", "min", "max", "count_if", "ratio")
"""What a measure can compute; ``ratio`` divides two other measures of the same aggregate."""


class Measure(BaseModel):
    """One figure of an aggregate window, e.g. ``{name: revenue_eur, fn: sum, field: amount_eur}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    fn: Literal["count", "count_distinct", "sum", "avg", "min", "max", "count_if", "ratio"]
    field: str | None = None
    condition: str | None = None
    of: tuple[str, str] | None = None
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
        problems += self._aggregate_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _aggregate_problems(self) -> list[str]:
        """Dimensions and measure fields must be silver columns; names and output types must agree."""
        problems = []
        columns = dict(self._silver_types())
        names = [a.name for a in self.aggregates]
        problems += [f"aggregates.{n}: aggregate name used more than once" for n in sorted(set(names)) if names.count(n) > 1]
        outputs: dict[str, tuple[str, str]] = {}  # gold column -> (type, where)
        for aggregate in self.aggregates:
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
                out = measure_type(measure, columns)
                if out is not None:
                    previous = outputs.setdefault(measure.name, (out, at))
                    if previous[0] != out:
                        problems.append(f"{at}: gives {out}, but {previous[1]} of the same name gives {previous[0]}")
            for dim in aggregate.group_by:
                if dim in outputs:
                    problems.append(f"{where}.group_by: {dim!r} is also a measure name")
        return problems

    def _silver_types(self) -> list[tuple[str, str]]:
        """Every silver column a gold aggregate may read, with its contract type."""
        types = [(name, spec.type) for name, spec in self.fields.items()]
        types += [(spec.name, spec.type) for spec in self.derived]
        types += [(spec.output_name(col), t) for spec in self.enrichment for col, t in spec.columns.items()]
        return types

    @cached_property
    def gold_schema(self) -> pa.Schema:
        """Schema of every gold row of the dataset: key columns, every dimension and measure of any
        aggregate (null where an aggregate has no such column), then the window's bookkeeping."""
        columns = dict(self._silver_types())
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

    def topic(self, layer: str) -> str:
        """Kafka topic of a layer: ``<dataset>.raw|silver|quarantine|gold``."""
        return f"{self.dataset}.{layer}"


def load_contract(path: Path) -> Contract:
    """Read and validate one contract file, its reference tables and its SQL."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a contract must be a YAML mapping")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("\n".join(_describe(path, exc))) from exc
    if contract.dataset != path.stem:
        raise ContractError(f"{path}: dataset: {contract.dataset!r} must match the file name {path.stem!r}")
    problems = check_sql(contract, path.parent)
    if problems:
        raise ContractError("\n".join(f"{path}: {problem}" for problem in problems))
    return contract


def _describe(path: Path, exc: ValidationError) -> list[str]:
    """One ``<file>: <location>: <problem>`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        location = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        for problem in message.splitlines():  # model-level problems already start with their location
            lines.append(f"{path}: {location}: {problem}" if location else f"{path}: {problem}")
    return lines


def load_contracts(directory: Path, datasets: list[str]) -> dict[str, Contract]:
    """Load the contracts of the configured datasets, failing on the first missing or broken one."""
    contracts = {}
    for name in datasets:
        path = directory / f"{name}.yaml"
        if not path.exists():
            raise ContractError(f"{path}: no contract for dataset {name!r}")
        contracts[name] = load_contract(path)
    return contracts


def connect() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection working in UTC, as the engine and the checks use."""
    con = duckdb.connect(config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    return con


def load_references(contract: Contract, contracts_dir: Path) -> dict[str, pa.Table]:
    """Each enrichment's reference table, typed: join columns as their fields, listed columns as declared."""
    tables, problems = _read_references(contract, contracts_dir)
    if problems:
        path = contracts_dir / f"{contract.dataset}.yaml"
        raise ContractError("\n".join(f"{path}: {problem}" for problem in problems))
    return tables


def _read_references(contract: Contract, contracts_dir: Path) -> tuple[dict[str, pa.Table], list[str]]:
    con = connect()
    tables, problems = {}, []
    for spec in contract.enrichment:
        try:
            tables[spec.name] = _load_reference(con, contract, spec, contracts_dir)
        except ValueError as exc:
            problems.append(f"enrichment.{spec.name}: {exc}")
    return tables, problems


def _load_reference(
    con: duckdb.DuckDBPyConnection, contract: Contract, spec: Enrichment, contracts_dir: Path
) -> pa.Table:
    path = contracts_dir / spec.path
    if not path.is_file():
        raise ValueError(f"reference file {path} does not exist")
    reader = "read_csv(?, header = true, all_varchar = true)" if path.suffix == ".csv" else "read_parquet(?)"
    try:
        source = con.sql(f"SELECT * FROM {reader}", params=[str(path)]).to_arrow_table()
    except duckdb.Error as exc:
        raise ValueError(f"cannot read reference file {path}: {_first_line(exc)}") from exc
    wanted = {column: contract.fields[name].type for name, column in spec.on.items()} | dict(spec.columns)
    missing = [column for column in wanted if column not in source.column_names]
    if missing:
        raise ValueError(f"reference file {path} has no column(s) {', '.join(missing)}")
    con.register("reference_source", source)
    typed = ", ".join(f"TRY_CAST({quote(col)} AS {sql_type(t)}) AS {quote(col)}" for col, t in wanted.items())
    table = con.sql(f"SELECT {typed} FROM reference_source").to_arrow_table()
    con.unregister("reference_source")
    for column, type_name in wanted.items():
        if table.column(column).null_count != source.column(column).null_count:
            raise ValueError(f"reference file {path}: column {column} has values that are not {type_name}")
    keys = list(dict.fromkeys(spec.on.values()))
    if any(table.column(column).null_count for column in keys):
        raise ValueError(f"reference file {path}: join column(s) {', '.join(keys)} have empty values")
    if table.group_by(keys).aggregate([]).num_rows != table.num_rows:
        raise ValueError(f"reference file {path}: join column(s) {', '.join(keys)} repeat a value")
    return table


def check_sql(contract: Contract, contracts_dir: Path) -> list[str]:
    """Problems (``<location>: <problem>``) DuckDB finds: regexes, reference tables, derived fields, rules."""
    con = connect()
    problems = []
    for name, spec in contract.fields.items():
        if spec.regex is not None:
            try:
                con.execute("SELECT regexp_matches('', ?)", [spec.regex])
            except duckdb.Error as exc:
                problems.append(
                    f"fields.{name}.regex: invalid regular expression {spec.regex!r}: {_first_line(exc)}"
                )
    problems += _read_references(contract, contracts_dir)[1]
    columns = [f"{quote(name)} {sql_type(spec.type)}" for name, spec in contract.fields.items()]
    columns.append(f"{KAFKA_TIMESTAMP} TIMESTAMPTZ")
    for spec in contract.enrichment:
        members = ", ".join(f"{quote(col)} {sql_type(t)}" for col, t in spec.columns.items())
        columns.append(f"{quote(spec.name)} STRUCT({members})")
    con.execute(f"CREATE TABLE event ({', '.join(columns)})")
    for derived in contract.derived:
        expression = f"CAST(({derived.sql}) AS {sql_type(derived.type)})"
        problem = _bind(con, derived.sql, f"SELECT * FROM event WHERE {expression} IS NULL")
        if problem is None:
            result = con.execute(f"DESCRIBE SELECT ({derived.sql}) AS v FROM event").fetchall()[0][1]
            if _family(result) not in _CASTS_TO[base_type(derived.type)]:
                problem = f"sql gives {result}, which does not convert to {derived.type}"
        if problem:
            problems.append(f"derived.{derived.name}: {problem}")
        # later derived fields and rules may use this one, even when it is broken
        con.execute(f"ALTER TABLE event ADD COLUMN {quote(derived.name)} {sql_type(derived.type)}")
    for rule in contract.rules:
        problem = _boolean_problem(con, rule.sql, "event")
        if problem:
            problems.append(f"rules.{rule.name}: {problem}")
    return problems + _check_conditions(contract, con)


def _boolean_problem(con: duckdb.DuckDBPyConnection, expression: str, table: str) -> str | None:
    """Why ``expression`` is not a valid boolean expression over ``table``, or None."""
    problem = _bind(con, expression, f"SELECT * FROM {table} WHERE ({expression})")
    if problem is None:
        result = con.execute(f"DESCRIBE SELECT ({expression}) AS r FROM {table}").fetchall()[0][1]
        problem = None if result == "BOOLEAN" else f"sql must be a boolean expression, but gives {result}"
    return problem


def _check_conditions(contract: Contract, con: duckdb.DuckDBPyConnection) -> list[str]:
    """Each ``count_if`` condition must be a boolean expression over silver columns."""
    problems = []
    columns = ", ".join(f"{quote(name)} {sql_type(t)}" for name, t in contract._silver_types())
    con.execute(f"CREATE TABLE silver ({columns})")
    for aggregate in contract.aggregates:
        for measure in aggregate.measures:
            if measure.condition is None:
                continue
            problem = _boolean_problem(con, measure.condition, "silver")
            if problem:
                problems.append(f"aggregates.{aggregate.name}.measures.{measure.name}.condition: {problem}")
    return problems


_CASTS_TO: dict[str, set[str]] = {
    "string": {"number", "bool", "string", "date", "timestamp", "null", "other"},
    "int": {"number", "bool", "string", "null"},
    "float": {"number", "bool", "string", "null"},
    "decimal": {"number", "bool", "string", "null"},
    "bool": {"number", "bool", "string", "null"},
    "date": {"date", "timestamp", "string", "null"},
    "timestamp": {"date", "timestamp", "string", "null"},
}
"""Which families of DuckDB result types a derived field of each contract type may be cast from.

DuckDB binds casts such as BOOLEAN -> DATE and fails only when a row arrives; these are refused at load.
"""


_FAMILIES = {
    **dict.fromkeys(
        [
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "UHUGEINT",
            "FLOAT",
            "DOUBLE",
        ],
        "number",
    ),
    **dict.fromkeys(
        ["TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"], "timestamp"
    ),
    "BOOLEAN": "bool",
    "VARCHAR": "string",
    "DATE": "date",
    '"NULL"': "null",
}


def _family(duckdb_type: str) -> str:
    """The family of a DuckDB type name as DESCRIBE prints it; lists, structs, intervals… are "other"."""
    return "number" if _DECIMAL_SQL.match(duckdb_type) else _FAMILIES.get(duckdb_type, "other")


def _bind(con: duckdb.DuckDBPyConnection, expression: str, query: str) -> str | None:
    """Why DuckDB refuses ``expression`` (one expression, no aggregate or window) in ``query``, or None."""
    try:
        duckdb.SQLExpression(expression)
        con.execute(f"{query} LIMIT 0")
    except duckdb.Error as exc:
        return f"invalid sql {expression!r}: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    """DuckDB's message without the echo of the (internal) query it was found in."""
    return str(exc).split("\n\nLINE ")[0].replace("\n", " ")
