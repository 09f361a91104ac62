"""The contract's type names and durations: their grammar and what they are in Arrow and in DuckDB.

A field's type is written in the contract as ``string``, ``int``, ``float``, ``bool``,
``timestamp``, ``date`` or ``decimal(p,s)``; the models validate it with :data:`TypeName`, and
everything downstream asks this module for the Arrow or SQL type it stands for.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import pyarrow as pa
from pydantic import AfterValidator, Field

_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
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

_NAME = r"^[a-z][a-z0-9_]*$"  # plain SQL identifiers; a leading underscore is kept for lineage columns
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


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
