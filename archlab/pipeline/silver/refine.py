"""Raw Kafka records to typed silver rows and explained quarantine rows, a whole batch at a time.

One DuckDB query per batch does what the contract asks: size and UTF-8 checks, JSON parsing, null
tokens, coercions and type checks, field constraints, the LEFT joins to reference tables, derived
fields and row rules. Each check is a column that is true where a row fails, false where it
passes and null where it does not apply (a missing field has no type to check), so a row with
several problems gets every reason and the per-check counts come for free. The messages of failed
rows are then written column-wise with Arrow; only the rare record that is not JSON is handed to
orjson, for a readable parse error. Records over ``max_payload_bytes`` are never parsed: their
quarantined payload keeps the first ``TRUNCATED_PAYLOAD_BYTES`` bytes and the ``size`` reason says so.
A payload that JSON escaping would swell past ``QUARANTINE_PAYLOAD_BYTES`` (up to six bytes per
control character) is cut the same way, so that its quarantine record fits the topic.

DuckDB spends time planning every expression of the query on every batch (about 30 ms per batch
for orders), so the query is kept lean and batches should be thousands of records, not single ones.
"""

from __future__ import annotations

import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from archlab.contract import (
    ENGINE_CHECKS,
    KAFKA_TIMESTAMP,
    LINEAGE,
    Contract,
    FieldSpec,
    base_type,
    connect,
    decimal_digits,
    load_references,
    quote,
    sql_type,
)
from archlab.lake.store import clamp_to_calendar

RAW_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
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
TRUNCATED_PAYLOAD_BYTES = 64 * 1024
"""How much of an oversized record the quarantine keeps."""
QUARANTINE_PAYLOAD_BYTES = 3 * 1024 * 1024
"""The most a quarantined payload may take escaped as JSON: the quarantine topic takes 4 MiB records."""

# DuckDB's JSON parser accepts two things JSON does not. A trailing comma is found by this pattern,
# which consumes strings whole so their content never matches; it runs only where the cheap
# ``_COMMA_BEFORE_CLOSE`` finds a candidate. NaN/Infinity literals need no pattern: their text is
# not a number, so the field's type check refuses them.
_COMMA_BEFORE_CLOSE = r",\s*[\]}]"
_TRAILING_COMMA = r'^(?:[^"]|"(?:[^"\\]|\\.)*")*?,\s*[\]}]'
# Patterns over a field's JSON text, as DuckDB re-serialises it: strings quoted, numbers bare.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_ISO_TIMESTAMP = r'"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)"'
_DATE = r'"\d{4}-\d{2}-\d{2}"'
_EPOCH_MS = r"-?\d{1,13}"  # up to the year 2286; longer numbers are more likely micro- or nanoseconds
_CLIP = 60  # characters of a sent value quoted in a message


@dataclass(frozen=True)
class RuleOutcome:
    """How many rows of a batch one check passed, failed (quarantined) or warned about."""

    passed: int = 0
    failed: int = 0
    warned: int = 0


@dataclass(frozen=True)
class RefineResult:
    """One refined batch: valid rows in ``contract.silver_schema``, the rest in ``QUARANTINE_SCHEMA``."""

    valid: pa.Table
    invalid: pa.Table
    rules: dict[str, RuleOutcome]


_MessageKind = Literal["size", "json", "constant", "required", "value", "max_length"]


@dataclass(frozen=True)
class _Check:
    """One check: ``flag`` is SQL that is true where a row fails, false where it passes, null where moot.

    ``kind`` says how the message of a failed row is written; ``detail`` completes it.
    """

    name: str
    kind: _MessageKind
    flag: str
    field: str | None = None
    detail: str = ""
    warn: bool = False


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _article(type_name: str) -> str:
    return "an" if type_name[0] in "aeiou" else "a"


def _join(*parts: str | pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Element-wise concatenation of texts and string arrays."""
    return pc.binary_join_element_wise(*parts, "")


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


class Refiner:
    """Refines raw batches of one dataset; one per thread, since it holds a DuckDB connection."""

    def __init__(self, contract: Contract, contracts_dir: Path) -> None:
        self.contract = contract
        self._con = connect()
        for index, table in enumerate(load_references(contract, contracts_dir).values()):
            self._con.register(f"lab_ref_{index}", table)
        self._checks = _checks(contract)
        self._sql = _refine_sql(contract, self._checks)
        self._field_index = {name: i for i, name in enumerate(contract.fields)}
        self.refine(RAW_SCHEMA.empty_table())  # the query binds now, not on the first real batch

    def refine(self, raw: pa.Table) -> RefineResult:
        """Sort ``raw`` (``RAW_SCHEMA`` columns; others are ignored) into valid and invalid rows, in order."""
        raw = raw.select(RAW_SCHEMA.names).cast(RAW_SCHEMA)
        stamps, odd_stamp = clamp_to_calendar(raw["kafka_timestamp"])
        raw = raw.set_column(RAW_SCHEMA.get_field_index("kafka_timestamp"), "kafka_timestamp", stamps)
        size = pc.binary_length(raw["value"])
        oversized = pc.fill_null(pc.greater(size, self.contract.max_payload_bytes), False)
        value = pc.if_else(oversized, pc.binary_slice(raw["value"], 0, TRUNCATED_PAYLOAD_BYTES), raw["value"])
        batch = pa.table(
            {
                "lab_row": pa.array(np.arange(raw.num_rows, dtype=np.int64)),
                "value": value,
                "lab_size": size,
                "kafka_timestamp": raw["kafka_timestamp"],
                "lab_odd_stamp": odd_stamp,
            }
        )
        self._con.register("lab_batch", batch)
        try:
            out = self._con.sql(self._sql).to_arrow_table()
        finally:
            self._con.unregister("lab_batch")
        fails = [
            pc.fill_null(out[f"lab_f{i}"], False).to_numpy(zero_copy_only=False)
            for i in range(len(self._checks))
        ]
        valid = out["lab_valid"].to_numpy(zero_copy_only=False)
        return RefineResult(
            valid=self._valid(out, raw, valid),
            invalid=self._invalid(out, raw, _array(value), np.flatnonzero(~valid), fails),
            rules=self._outcomes(out, fails),
        )

    def _valid(self, out: pa.Table, raw: pa.Table, valid: np.ndarray) -> pa.Table:
        schema = self.contract.silver_schema
        rows, lineage = out.filter(valid), raw.filter(valid)
        columns = [rows[name] for name in schema.names[: -len(LINEAGE)]]
        columns += [
            pa.array(np.full(lineage.num_rows, self.contract.version, dtype=np.int32)),
            lineage["partition"],
            lineage["offset"],
            lineage["kafka_timestamp"],
        ]
        return pa.Table.from_arrays(
            [column.cast(field.type) for column, field in zip(columns, schema, strict=True)], schema=schema
        )

    def _invalid(
        self, out: pa.Table, raw: pa.Table, value: pa.Array, rows: np.ndarray, fails: list[np.ndarray]
    ) -> pa.Table:
        lineage = raw.take(rows)
        payload, encoding = _payloads(_array(out["lab_text"].take(rows)), value.take(rows))
        columns = [
            pa.repeat(pa.scalar(self.contract.dataset, pa.string()), len(rows)),
            pa.array(np.full(len(rows), self.contract.version, dtype=np.int32)),
            lineage["partition"],
            lineage["offset"],
            lineage["kafka_timestamp"],
            _bounded(payload),
            encoding,
            self._reasons(out, raw, payload, rows, fails),
        ]
        return pa.Table.from_arrays(columns, schema=QUARANTINE_SCHEMA)

    def _reasons(
        self, out: pa.Table, raw: pa.Table, payload: pa.Array, rows: np.ndarray, fails: list[np.ndarray]
    ) -> pa.Array:
        """Each invalid row's failed quarantine checks, in check order, as a list<struct> column."""
        positions, check_ids, messages = (
            [np.zeros(0, np.int64)],
            [np.zeros(0, np.int64)],
            [pa.array([], pa.string())],
        )
        for i, check in enumerate(self._checks):
            failed = np.flatnonzero(fails[i][rows])
            if check.warn or not len(failed):
                continue
            positions.append(failed)
            check_ids.append(np.full(len(failed), i))
            messages.append(_array(self._messages(check, out, raw, payload, rows, failed)))
        position, check_id = np.concatenate(positions), np.concatenate(check_ids)
        order = np.lexsort((check_id, position))
        names = pa.array([check.name for check in self._checks], pa.string())
        fields = pa.array([check.field for check in self._checks], pa.string())
        items = pa.StructArray.from_arrays(
            [
                names.take(check_id[order]),
                fields.take(check_id[order]),
                pa.concat_arrays(messages).take(order),
            ],
            fields=list(REASON),
        )
        offsets = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=len(rows)))]).astype(
            np.int32
        )
        return pa.ListArray.from_arrays(
            pa.array(offsets), items, type=QUARANTINE_SCHEMA.field("reasons").type
        )

    def _messages(
        self,
        check: _Check,
        out: pa.Table,
        raw: pa.Table,
        payload: pa.Array,
        rows: np.ndarray,
        failed: np.ndarray,
    ) -> pa.Array | pa.ChunkedArray:
        """The message of each row (``rows[failed]``) that failed ``check``, written column-wise."""
        where = rows[failed]
        if check.kind == "size":
            return _join(
                "payload is ", pc.binary_length(raw["value"].take(where)).cast(pa.string()), check.detail
            )
        if check.kind == "json":
            return pa.array([_json_problem(text) for text in payload.take(failed).to_pylist()], pa.string())
        if check.kind == "constant":
            return pa.repeat(pa.scalar(check.detail, pa.string()), len(where))
        assert check.field is not None
        sent = pc.struct_field(
            out["lab_doc"].take(where), [self._field_index[check.field]]
        )  # JSON text as sent
        shown = pc.if_else(
            pc.greater(pc.utf8_length(sent), _CLIP),
            _join(pc.utf8_slice_codeunits(sent, 0, _CLIP - 3), "..."),
            sent,
        )
        if check.kind == "required":
            keys = _array(out["lab_keys"].take(where))
            named = pc.equal(pc.list_flatten(keys), check.field).to_numpy(zero_copy_only=False)
            has_key = np.zeros(len(where), dtype=bool)
            has_key[pc.list_parent_indices(keys).to_numpy()[named]] = True
            absent = pc.if_else(
                pa.array(has_key),
                f"required field {check.field} is null",
                f"missing required field {check.field}",
            )
            return pc.coalesce(
                _join(f"required field {check.field} is null (null token ", shown, ")"), absent
            )
        if check.kind == "max_length":
            length = pc.utf8_length(out[check.field].take(where)).cast(pa.string())
            return _join(f"{check.field}: length ", length, check.detail)
        return _join(f"{check.field}: ", shown, check.detail)

    def _outcomes(self, out: pa.Table, fails: list[np.ndarray]) -> dict[str, RuleOutcome]:
        outcomes = {}
        for i, check in enumerate(self._checks):
            flag = out[f"lab_f{i}"]
            failed = int(fails[i].sum())
            passed = len(flag) - flag.null_count - failed
            outcomes[check.name] = (
                RuleOutcome(passed, 0, failed) if check.warn else RuleOutcome(passed, failed, 0)
            )
        return outcomes


def _payloads(text: pa.Array, value: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The quarantined payloads and their encodings: the decoded text, else the bytes decoded now or base64.

    Only records never decoded by the query (oversized or not UTF-8) are handled one by one.
    """
    undecoded = pc.and_(pc.is_null(text), pc.is_valid(value))
    late = [_decoded(raw) for raw in value.filter(undecoded).to_pylist()]
    payload = pc.replace_with_mask(text, undecoded, pa.array([text for text, _ in late], pa.string()))
    encoding = pc.if_else(pc.is_null(value), "null", "utf-8")
    encoding = pc.replace_with_mask(encoding, undecoded, pa.array([kind for _, kind in late], pa.string()))
    return payload, encoding


def _bounded(payload: pa.Array) -> pa.Array:
    """The payloads, each cut to its first ``TRUNCATED_PAYLOAD_BYTES`` bytes if escaped it would pass
    ``QUARANTINE_PAYLOAD_BYTES``; only payloads over a sixth of that are measured, one by one."""
    long = pc.fill_null(pc.greater(pc.binary_length(payload), QUARANTINE_PAYLOAD_BYTES // 6), False)
    if not pc.any(long).as_py():
        return payload
    kept = [
        text.encode()[:TRUNCATED_PAYLOAD_BYTES].decode("utf-8", "ignore")
        if len(orjson.dumps(text)) > QUARANTINE_PAYLOAD_BYTES
        else text
        for text in payload.filter(long).to_pylist()
    ]
    return pc.replace_with_mask(payload, long, pa.array(kept, pa.string()))


def _decoded(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_problem(text: str | None) -> str:
    """Why a record's value is not a JSON object, in orjson's words where it is not JSON at all."""
    if text is None:
        return "record has no value (null)"
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    if isinstance(parsed, dict):  # orjson accepts something DuckDB's parser refused
        return "not valid JSON"
    return f"not a JSON object but {_JSON_KINDS.get(type(parsed), 'null')}"


def _checks(contract: Contract) -> list[_Check]:
    """Every check of the contract, in the order reasons are listed."""
    limit = contract.max_payload_bytes
    checks = [
        _Check(
            "kafka_timestamp",
            "constant",
            "lab_odd_stamp",
            detail="Kafka record timestamp outside years 1-9999 (its producer set it); quarantine keeps "
            "the nearest of those bounds, bronze the value as sent",
        ),
        _Check(
            "size",
            "size",
            f"lab_size > {limit}",
            detail=f" bytes, over max_payload_bytes {limit}; the quarantined payload keeps its first "
            f"{TRUNCATED_PAYLOAD_BYTES} bytes",
        ),
        _Check(
            "utf8", "constant", f"CASE WHEN lab_size <= {limit} THEN lab_text IS NULL END", detail="not UTF-8"
        ),
        _Check(
            "json",
            "json",
            "CASE WHEN lab_value IS NULL THEN true WHEN lab_text IS NOT NULL THEN NOT lab_obj END",
        ),
    ]
    assert [check.name for check in checks] == list(ENGINE_CHECKS)
    for i, (name, spec) in enumerate(contract.fields.items()):
        checks += _field_checks(i, name, spec, is_event_time=name == contract.event_time)
    checks += [
        _Check(
            rule.name,
            "constant",
            f"CASE WHEN lab_obj THEN NOT coalesce(try(({rule.sql})), true) END",
            detail=rule.description or f"violates {rule.sql}",
            warn=rule.action == "warn",
        )
        for rule in contract.rules
    ]
    return checks


def _field_checks(i: int, name: str, spec: FieldSpec, *, is_event_time: bool) -> list[_Check]:
    column = quote(name)
    checks = []
    if spec.required:
        checks.append(
            _Check(f"{name}.required", "required", f"CASE WHEN lab_obj THEN NOT lab_p{i} END", name)
        )
    checks.append(
        _Check(
            f"{name}.type",
            "value",
            f"CASE WHEN lab_p{i} THEN {column} IS NULL END",
            name,
            f" is not {_article(spec.type)} {spec.type}"
            + (" from 0001-01-01 to 9999-12-30 (its window must end by 9999-12-31)" if is_event_time
               else " in years 1-9999" if base_type(spec.type) in ("date", "timestamp") else ""),
        )
    )
    if spec.min is not None:
        checks.append(
            _Check(f"{name}.min", "value", f"{column} < {spec.min!r}", name, f" is below min {spec.min}")
        )
    if spec.max is not None:
        checks.append(
            _Check(f"{name}.max", "value", f"{column} > {spec.max!r}", name, f" is above max {spec.max}")
        )
    if spec.allowed is not None:
        listed = ", ".join(_literal(v) if isinstance(v, str) else str(v) for v in spec.allowed)
        shown = ", ".join(str(value) for value in spec.allowed)
        checks.append(
            _Check(f"{name}.allowed", "value", f"{column} NOT IN ({listed})", name, f" is not one of {shown}")
        )
    if spec.regex is not None:
        checks.append(
            _Check(
                f"{name}.regex",
                "value",
                f"NOT regexp_matches({column}, {_literal(spec.regex)})",
                name,
                f" does not match {spec.regex}",
            )
        )
    if spec.max_length is not None:
        checks.append(
            _Check(
                f"{name}.max_length",
                "max_length",
                f"length({column}) > {spec.max_length}",
                name,
                f" is over max_length {spec.max_length}",
            )
        )
    return checks


def _typed(spec: FieldSpec, j: str) -> str:
    """SQL for a field's typed value from its JSON text ``j``; null when absent or not of the type."""
    kind = base_type(spec.type)
    if kind == "string":
        return f"CASE WHEN starts_with({j}, '\"') THEN {j} ->> '$' END"
    if kind == "bool":
        if not spec.coerce:
            return f"CASE {j} WHEN 'true' THEN true WHEN 'false' THEN false END"
        return (
            f"CASE lower({j}) WHEN 'true' THEN true WHEN 'false' THEN false "
            "WHEN '\"true\"' THEN true WHEN '\"false\"' THEN false END"
        )
    if kind == "date":
        return f"CASE WHEN regexp_full_match({j}, '{_DATE}') THEN TRY_CAST(trim({j}, '\"') AS DATE) END"
    if kind == "timestamp":
        text = f"upper(trim({j}, '\"'))"  # DuckDB refuses the lower-case t and z that RFC 3339 allows
        iso = f"WHEN regexp_full_match({j}, '{_ISO_TIMESTAMP}') THEN TRY_CAST({text} AS TIMESTAMPTZ)"
        from_ms = f"CAST(epoch_ms(CAST({j} AS BIGINT)) AS TIMESTAMPTZ)"
        epoch = f"WHEN regexp_full_match({j}, '{_EPOCH_MS}') THEN {from_ms}"
        return f"CASE {iso} {epoch if spec.coerce else ''} END"
    if kind == "int":
        number, comma = r"-?\d+(?:\.0+)?" if spec.coerce else r"-?\d+", ""
        text = r"[+-]?\d+"
    elif kind == "float":
        number, text, comma = _NUMBER, _NUMBER, r"[+-]?\d+,\d+"
    else:
        scale = decimal_digits(spec.type)[1]
        fraction = rf"\d{{1,{scale}}}0*" if scale else "0*"
        number = text = rf"[+-]?\d+(?:\.{fraction})?"
        comma = rf"[+-]?\d+,{fraction}"
    pattern = f'(?:{number}|" *{text} *")' if spec.coerce else number
    value = f"split_part(trim({j}, '\" '), '.', 1)" if kind == "int" else f"trim({j}, '\" ')"
    target = sql_type(spec.type)
    typed = f"CASE WHEN regexp_full_match({j}, '{pattern}') THEN TRY_CAST({value} AS {target}) "
    if spec.decimal_comma:
        dotted = f"replace(trim({j}, '\" '), ',', '.')"
        typed += f"WHEN regexp_full_match({j}, '\" *{comma} *\"') THEN TRY_CAST({dotted} AS {target}) "
    return typed + "END"


def _present(i: int, tokens: list[str]) -> str:
    """SQL: field ``i`` was sent, neither null nor a null token (compared as JSON text)."""
    if not tokens:
        return f"lab_j{i} IS NOT NULL AS lab_p{i}"
    listed = ", ".join(_literal(orjson.dumps(token).decode()) for token in tokens)
    return f"coalesce(lab_j{i} NOT IN ({listed}), false) AS lab_p{i}"


def _refine_sql(contract: Contract, checks: list[_Check]) -> str:
    """The query that refines the batch registered as ``lab_batch``: a row per input row, in input order.

    Every expression costs planning time on each batch, so the query keeps them few: types are read
    from each field's JSON text directly, and messages are written in Arrow for the failed rows only.
    """
    limit = contract.max_payload_bytes
    fields = list(contract.fields.items())
    document = "{" + ", ".join(f'"{name}": "JSON"' for name, _ in fields) + "}"
    query = (
        f"SELECT lab_row, kafka_timestamp AS {KAFKA_TIMESTAMP}, lab_odd_stamp, value AS lab_value, lab_size, "
        f"CASE WHEN lab_size <= {limit} THEN try(decode(value)) END AS lab_text FROM lab_batch"
    )
    is_object = "starts_with(lab_text, '{') OR starts_with(ltrim(lab_text, ' \t\n\r'), '{')"
    strict = (
        f"NOT CASE WHEN regexp_matches(lab_text, {_literal(_COMMA_BEFORE_CLOSE)}) "
        f"THEN regexp_matches(lab_text, {_literal(_TRAILING_COMMA)}) ELSE false END"
    )
    is_json_object = f"coalesce(json_valid(lab_text) AND ({is_object}) AND {strict}, false)"
    query = f"SELECT *, {is_json_object} AS lab_obj FROM ({query})"
    parse = f"from_json(lab_text, {_literal(document)})"
    query = f"SELECT *, CASE WHEN lab_obj THEN {parse} END AS lab_doc FROM ({query})"
    texts = ", ".join(f"lab_doc.{quote(name)} AS lab_j{i}" for i, (name, _) in enumerate(fields))
    query = f"SELECT *, {texts} FROM ({query})"
    present = ", ".join(_present(i, contract.null_tokens_of(name)) for i, (name, _) in enumerate(fields))
    query = f"SELECT *, {present} FROM ({query})"
    typed = ", ".join(
        f"CASE WHEN lab_p{i} THEN {_typed(spec, f'lab_j{i}')} END AS {quote(name)}"
        if contract.null_tokens_of(name)
        else f"{_typed(spec, f'lab_j{i}')} AS {quote(name)}"
        for i, (name, spec) in enumerate(fields)
    )
    query = f"SELECT *, {typed} FROM ({query})"
    floats = [quote(name) for name, spec in fields if spec.type == "float"]
    if floats:  # a JSON number like 1e400 reads as infinity: not a float anyone sent
        replaced = ", ".join(f"CASE WHEN isfinite({name}) THEN {name} END AS {name}" for name in floats)
        query = f"SELECT * REPLACE ({replaced}) FROM ({query})"
    # DuckDB has dates before year 1 and after 9999; Python, the lake's dt= folders and most readers
    # do not, so such a value is not one of the type. The event time stops a day earlier: gold
    # windows divide a day, so each window of an earlier event time ends inside the calendar.
    calendar = {"date": ("DATE", "0001-01-01", "9999-12-31"),
                "timestamp": ("TIMESTAMPTZ", "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00"),
                "event_time": ("TIMESTAMPTZ", "0001-01-01 00:00:00+00", "9999-12-30 23:59:59.999999+00")}
    bounded = [
        (quote(name), *calendar["event_time" if name == contract.event_time else base_type(spec.type)])
        for name, spec in fields
        if base_type(spec.type) in calendar
    ]
    if bounded:
        replaced = ", ".join(
            f"CASE WHEN {name} BETWEEN {kind} '{low}' AND {kind} '{high}' THEN {name} END AS {name}"
            for name, kind, low, high in bounded
        )
        query = f"SELECT * REPLACE ({replaced}) FROM ({query})"
    joins, structs = [], []
    for index, spec in enumerate(contract.enrichment):
        alias = f"lab_r{index}"
        condition = " AND ".join(
            f"lab_e.{quote(field)} = {alias}.{quote(col)}" for field, col in spec.on.items()
        )
        joins.append(f"LEFT JOIN lab_ref_{index} AS {alias} ON {condition}")
        members = ", ".join(f"{quote(col)} := {alias}.{quote(col)}" for col in spec.columns)
        structs.append(f"struct_pack({members}) AS {quote(spec.name)}")
    if joins:
        query = f"SELECT lab_e.*, {', '.join(structs)} FROM ({query}) AS lab_e {' '.join(joins)}"
    for derived in contract.derived:
        value = f"try(CAST(({derived.sql}) AS {sql_type(derived.type)}))"
        if derived.type == "float":
            value = f"CASE WHEN isfinite({value}) THEN {value} END"
        query = f"SELECT *, {value} AS {quote(derived.name)} FROM ({query})"
    flags = ", ".join(f"{check.flag} AS lab_f{i}" for i, check in enumerate(checks))
    query = f"SELECT *, {flags} FROM ({query})"
    quarantined = " OR ".join(f"lab_f{i}" for i, check in enumerate(checks) if not check.warn)
    query = f"SELECT *, NOT coalesce({quarantined}, false) AS lab_valid FROM ({query})"
    silver = [quote(name) for name, _ in fields] + [quote(derived.name) for derived in contract.derived]
    silver += [
        f"{quote(spec.name)}.{quote(col)} AS {quote(spec.output_name(col))}"
        for spec in contract.enrichment
        for col in spec.columns
    ]
    flag_columns = ", ".join(f"lab_f{i}" for i in range(len(checks)))
    return (
        f"SELECT {', '.join(silver)}, lab_valid, {flag_columns}, "
        "CASE WHEN NOT lab_valid THEN lab_text END AS lab_text, "
        "CASE WHEN NOT lab_valid THEN lab_doc END AS lab_doc, "
        "CASE WHEN NOT lab_valid AND lab_obj THEN json_keys(lab_text) END AS lab_keys "
        f"FROM ({query}) ORDER BY lab_row"  # the reference joins need not keep the input order
    )


# --- the wire: one compact JSON object per row, exact both ways -----------------------------------------

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
