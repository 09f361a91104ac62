"""Raw Kafka records to typed silver rows and explained quarantine rows, a whole batch at a time.

The contract's checks run as one DuckDB query per batch (compiled by
:mod:`archlab.pipeline.silver.checks`); this module feeds the batch in and assembles what comes
out. The messages of failed rows are written column-wise with Arrow; only the rare record that is
not JSON is handed to orjson, for a readable parse error. Records over ``max_payload_bytes`` are
never parsed: their quarantined payload keeps the first ``TRUNCATED_PAYLOAD_BYTES`` bytes and the
``size`` reason says so. A payload that JSON escaping would swell past ``QUARANTINE_PAYLOAD_BYTES``
(up to six bytes per control character) is cut the same way, so that its quarantine record fits
the topic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from archlab.contract import LINEAGE, Contract, connect, load_references
from archlab.lake.store import clamp_to_calendar
from archlab.pipeline.silver.checks import TRUNCATED_PAYLOAD_BYTES, Check, contract_checks, refine_sql
from archlab.pipeline.wire import QUARANTINE_SCHEMA, REASON

RAW_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
QUARANTINE_PAYLOAD_BYTES = 3 * 1024 * 1024
"""The most a quarantined payload may take escaped as JSON: the quarantine topic takes 4 MiB records."""
_CLIP = 60  # characters of a sent value quoted in a message


@dataclass(frozen=True)
class RuleOutcome:
    """How many rows of a batch one check passed, failed (quarantined) or warned about."""

    passed: int = 0
    failed: int = 0
    warned: int = 0


@dataclass(frozen=True)
class RefineResult:
    """One refined batch: valid rows in ``contract.silver_schema``, the rest in ``QUARANTINE_SCHEMA``.

    ``invalid_event_time`` is the event time of each invalid row as far as it could be read (null where
    not): a batch rebuild (``archlab.batch``) files a quarantined record by it, the stream ignores it."""

    valid: pa.Table
    invalid: pa.Table
    rules: dict[str, RuleOutcome]
    invalid_event_time: pa.Array | pa.ChunkedArray


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
        # The refine query is a chain of projections over one batch and a few small reference joins: DuckDB's
        # optimizer finds nothing to gain there, and cost ~5 ms a batch, a fifth of a small batch's time.
        self._con.execute("PRAGMA disable_optimizer")
        for index, table in enumerate(load_references(contract, contracts_dir).values()):
            self._con.register(f"lab_ref_{index}", table)
        self._checks = contract_checks(contract)
        self._sql = refine_sql(contract, self._checks)
        self._field_index = {name: i for i, name in enumerate(contract.fields)}
        self._query: duckdb.DuckDBPyRelation | None = None
        self.refine(RAW_SCHEMA.empty_table())  # the query is parsed and checked now, not on the first real batch

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
            # One relation, built once and run on each batch registered under its name: building it from
            # the SQL text again cost a third of a small batch's time (parsing and an extra binding).
            if self._query is None:
                self._query = self._con.sql(self._sql)
            out = self._query.to_arrow_table()
        finally:
            self._con.unregister("lab_batch")
        fails = [
            pc.fill_null(out[f"lab_f{i}"], False).to_numpy(zero_copy_only=False)
            for i in range(len(self._checks))
        ]
        valid = out["lab_valid"].to_numpy(zero_copy_only=False)
        invalid_rows = np.flatnonzero(~valid)
        return RefineResult(
            valid=self._valid(out, raw, valid),
            invalid=self._invalid(out, raw, _array(value), invalid_rows, fails),
            rules=self._outcomes(out, fails),
            invalid_event_time=out[self.contract.event_time].take(invalid_rows),
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
        check: Check,
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
