"""The wire format between pipeline stages: one compact JSON object per row, exact both ways.

Silver and quarantine records travel on Kafka in it, and gold and the lake sinks read them back
in exactly the schema they were written in: timestamps as ISO-8601 with ``Z``, decimals as exact
strings, dates as ``YYYY-MM-DD``. DuckDB writes the JSON (fast, column-wise) and Arrow's JSON reader
parses it.
"""

from __future__ import annotations

import io
import threading

import duckdb
import pyarrow as pa
import pyarrow.json as pj

from archlab.contract import Contract, connect, quote

REASON = pa.struct(
    [
        pa.field("check", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("message", pa.string(), nullable=False),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("contract_version", pa.int32(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("payload_encoding", pa.string(), nullable=False),
        pa.field("reasons", pa.list_(pa.field("item", REASON, nullable=False)), nullable=False),
    ]
)
"""A quarantine record: the raw record's lineage and payload, and every reason it was refused."""

_local = threading.local()


def _wire_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection per thread for (de)serialising, kept because opening one costs milliseconds."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = connect()
    return con


_TIME_FORMATS = {"s": "%Y-%m-%dT%H:%M:%SZ", "ms": "%Y-%m-%dT%H:%M:%S.%gZ", "us": "%Y-%m-%dT%H:%M:%S.%fZ"}


def _wire_value(field: pa.Field) -> str:
    """SQL for a column as it goes on the wire: timestamps ISO-8601 with Z, decimals as exact strings.

    Dates need nothing: DuckDB writes them as ``YYYY-MM-DD`` strings.
    """
    column = quote(field.name)
    if pa.types.is_timestamp(field.type):
        return f"strftime({column}, '{_TIME_FORMATS[field.type.unit]}')"
    if pa.types.is_decimal(field.type):
        return f"CAST({column} AS VARCHAR)"
    return column


def _wire_type(data_type: pa.DataType) -> pa.DataType:
    """How Arrow's JSON reader must read a column: timestamps, dates and decimals arrive as strings."""
    textual = (
        pa.types.is_timestamp(data_type) or pa.types.is_date(data_type) or pa.types.is_decimal(data_type)
    )
    return pa.string() if textual else data_type


def to_wire_json(table: pa.Table) -> list[bytes]:
    """One compact JSON object per row of ``table``, as :func:`from_wire_json` reads it back."""
    con = _wire_connection()
    con.register("lab_wire", table)
    try:
        members = ", ".join(f"{quote(field.name)} := {_wire_value(field)}" for field in table.schema)
        lines = con.sql(f"SELECT to_json(struct_pack({members})) AS line FROM lab_wire").to_arrow_table()
    finally:
        con.unregister("lab_wire")
    return lines["line"].cast(pa.binary()).to_pylist()


def from_wire_json(values: list[bytes], schema: pa.Schema, *, other_fields: str = "error") -> pa.Table:
    """Rows of ``schema`` from wire JSON; ``other_fields="ignore"`` reads only the schema's columns."""
    if not values:
        return schema.empty_table()
    data = b"\n".join(values)
    wire = pa.schema([field.with_type(_wire_type(field.type)) for field in schema])
    table = pj.read_json(
        io.BytesIO(data),
        read_options=pj.ReadOptions(block_size=len(data) + 1),
        parse_options=pj.ParseOptions(explicit_schema=wire, unexpected_field_behavior=other_fields),
    )
    return pa.Table.from_arrays([table[field.name].cast(field.type) for field in schema], schema=schema)


def silver_json(valid: pa.Table) -> list[bytes]:
    """One compact JSON object per silver row (timestamps ISO-8601 with Z, decimals as strings)."""
    return to_wire_json(valid)


def silver_from_json(values: list[bytes], contract: Contract) -> pa.Table:
    """Silver rows back from ``silver_json`` output, in exactly ``contract.silver_schema``."""
    return from_wire_json(values, contract.silver_schema)


def quarantine_json(invalid: pa.Table) -> list[bytes]:
    """One compact JSON object per quarantine row."""
    return to_wire_json(invalid)


def quarantine_from_json(values: list[bytes]) -> pa.Table:
    """Quarantine rows back from ``quarantine_json`` output, in exactly ``QUARANTINE_SCHEMA``."""
    return from_wire_json(values, QUARANTINE_SCHEMA)
