"""The refiner's compiler: a contract becomes its list of checks and one DuckDB query that runs them all.

The query does what the contract asks of a batch: size and UTF-8 checks, JSON parsing, null
tokens, coercions and type checks, field constraints, the LEFT joins to reference tables, derived
fields and row rules. Each check is a column that is true where a row fails, false where it
passes and null where it does not apply (a missing field has no type to check), so a row with
several problems gets every reason and the per-check counts come for free. How a failed check's
message is then written is :mod:`archlab.pipeline.silver.refine`'s business; a :class:`Check`
only says which kind of message it needs.

DuckDB spends time planning every expression of the query on every batch (about 30 ms per batch
for orders), so the query is kept lean and batches should be thousands of records, not single ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from archlab.contract import (
    ENGINE_CHECKS,
    KAFKA_TIMESTAMP,
    Contract,
    FieldSpec,
    base_type,
    decimal_digits,
    quote,
    sql_type,
)

TRUNCATED_PAYLOAD_BYTES = 64 * 1024
"""How much of an oversized record the quarantine keeps (such a record is never parsed)."""

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

MessageKind = Literal["size", "json", "constant", "required", "value", "max_length"]


@dataclass(frozen=True)
class Check:
    """One check: ``flag`` is SQL that is true where a row fails, false where it passes, null where moot.

    ``kind`` says how the message of a failed row is written; ``detail`` completes it.
    """

    name: str
    kind: MessageKind
    flag: str
    field: str | None = None
    detail: str = ""
    warn: bool = False


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _article(type_name: str) -> str:
    return "an" if type_name[0] in "aeiou" else "a"


def contract_checks(contract: Contract) -> list[Check]:
    """Every check of the contract, in the order reasons are listed."""
    limit = contract.max_payload_bytes
    checks = [
        Check(
            "kafka_timestamp",
            "constant",
            "lab_odd_stamp",
            detail="Kafka record timestamp outside years 1-9999 (its producer set it); quarantine keeps "
            "the nearest of those bounds, bronze the value as sent",
        ),
        Check(
            "size",
            "size",
            f"lab_size > {limit}",
            detail=f" bytes, over max_payload_bytes {limit}; the quarantined payload keeps its first "
            f"{TRUNCATED_PAYLOAD_BYTES} bytes",
        ),
        Check(
            "utf8", "constant", f"CASE WHEN lab_size <= {limit} THEN lab_text IS NULL END", detail="not UTF-8"
        ),
        Check(
            "json",
            "json",
            "CASE WHEN lab_value IS NULL THEN true WHEN lab_text IS NOT NULL THEN NOT lab_obj END",
        ),
    ]
    assert [check.name for check in checks] == list(ENGINE_CHECKS)
    for i, (name, spec) in enumerate(contract.fields.items()):
        checks += _field_checks(i, name, spec, is_event_time=name == contract.event_time)
    checks += [
        Check(
            rule.name,
            "constant",
            f"CASE WHEN lab_obj THEN NOT coalesce(try(({rule.sql})), true) END",
            detail=rule.description or f"violates {rule.sql}",
            warn=rule.action == "warn",
        )
        for rule in contract.rules
    ]
    return checks


def _field_checks(i: int, name: str, spec: FieldSpec, *, is_event_time: bool) -> list[Check]:
    column = quote(name)
    checks = []
    if spec.required:
        checks.append(
            Check(f"{name}.required", "required", f"CASE WHEN lab_obj THEN NOT lab_p{i} END", name)
        )
    checks.append(
        Check(
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
            Check(f"{name}.min", "value", f"{column} < {spec.min!r}", name, f" is below min {spec.min}")
        )
    if spec.max is not None:
        checks.append(
            Check(f"{name}.max", "value", f"{column} > {spec.max!r}", name, f" is above max {spec.max}")
        )
    if spec.allowed is not None:
        listed = ", ".join(_literal(v) if isinstance(v, str) else str(v) for v in spec.allowed)
        shown = ", ".join(str(value) for value in spec.allowed)
        checks.append(
            Check(f"{name}.allowed", "value", f"{column} NOT IN ({listed})", name, f" is not one of {shown}")
        )
    if spec.regex is not None:
        checks.append(
            Check(
                f"{name}.regex",
                "value",
                f"NOT regexp_matches({column}, {_literal(spec.regex)})",
                name,
                f" does not match {spec.regex}",
            )
        )
    if spec.max_length is not None:
        checks.append(
            Check(
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


def refine_sql(contract: Contract, checks: list[Check]) -> str:
    """The query that refines the batch registered as ``lab_batch``: a row per input row, in input order.

    ``lab_batch`` has ``lab_row`` (the input order), ``value``, ``lab_size``, ``kafka_timestamp`` and
    ``lab_odd_stamp``; each enrichment's reference table is registered as ``lab_ref_<index>``. The
    result has the silver columns, ``lab_valid``, a ``lab_f<i>`` flag per check of ``checks``, and
    for invalid rows the text, parsed document and keys that messages quote (``lab_text``,
    ``lab_doc``, ``lab_keys``).

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
