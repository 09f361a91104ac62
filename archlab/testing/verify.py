"""The exactly-once verifier: does every layer hold what was sent, each record once and unchanged?

One set of checks serves the integration tests and the chaos harness (``make chaos``), so a run
under kills and outages is judged by the same rules as a quiet test:

* bronze holds every raw (partition, offset) exactly once, byte-identical;
* silver ∪ quarantine hold raw minus the injected duplicates, each once (their lineage columns
  name the raw record), on the topics and on the lake;
* gold, each aggregate's table on the lake as it is (exactly one row per window and group) and the
  latest record per key on the compacted gold topic, equals the batch truth over silver
  (:mod:`archlab.testing.truth`).

Records are named by their raw position ``(partition, offset)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import orjson
import structlog
from deltalake.exceptions import DeltaError
from tenacity import AsyncRetrying, stop_after_attempt, wait_fixed

from archlab.contract import Contract
from archlab.core import names, sql
from archlab.core.settings import Settings
from archlab.ingest.generators import INJECTED_HEADER
from archlab.kafka.clients import read_all
from archlab.lake.query import table_stats
from archlab.lake.tables import Tables
from archlab.testing.truth import Key, differences, gold_key, truth

log = structlog.get_logger(__name__)

Position = tuple[int, int]
"""A raw record: (partition, offset) on ``<dataset>.raw``."""
V = TypeVar("V")
#: Where silver and quarantine rows name the raw record they came from.
LINEAGE = {"silver": ("_source_partition", "_source_offset"), "quarantine": ("source_partition", "source_offset")}


def _some(items: Iterable[Any], count: int = 5) -> list[Any]:
    return sorted(items)[:count]


# ---------------------------------------------------------------------------------- the rules
def landed_exactly_once(rows: Iterable[tuple[int, int, V]], sent: Mapping[Position, V]) -> list[str]:
    """What is wrong with ``rows`` (partition, offset, value) as a copy of ``sent``: records landed
    twice, missing, unexpected or changed; empty when each sent record landed once, identical."""
    seen: dict[Position, V] = {}
    twice = []
    for partition, offset, value in rows:
        if (partition, offset) in seen:
            twice.append((partition, offset))
        seen[(partition, offset)] = value
    missing = sent.keys() - seen.keys()
    unexpected = seen.keys() - sent.keys()
    changed = [position for position in sent.keys() & seen.keys() if sent[position] != seen[position]]
    return [f"{len(found)} {what}, e.g. {_some(found)}" for found, what in (
        (twice, "landed twice"), (missing, "missing"), (unexpected, "unexpected"), (changed, "changed"),
    ) if found]


def refined_exactly_once(positions: Sequence[Position], expected: set[Position]) -> list[str]:
    """What is wrong with the raw positions silver ∪ quarantine name, against ``expected`` (raw
    minus injected duplicates): records out twice, missing or unexpected; empty when right."""
    got = set(positions)
    twice = len(positions) - len(got)
    problems = [f"{twice} came out twice"] if twice else []
    return problems + [f"{len(found)} {what}, e.g. {_some(found)}" for found, what in (
        (expected - got, "missing"), (got - expected, "unexpected (a duplicate or unknown offset)"),
    ) if found]


# ---------------------------------------------------------------------------------- readers
def table_rows(tables: Tables, layer: str, dataset: str, select: str) -> list[tuple[Any, ...]]:
    """``SELECT <select> FROM`` the layer's table of a dataset (its latest snapshot); [] before it exists."""
    con = sql.connect(threads=None)
    if not tables.register(con, "lab_table", names.table_path(layer, dataset)):
        return []
    return con.execute(f"SELECT {select} FROM lab_table").fetchall()


def bronze_rows(tables: Tables, dataset: str, digest: bool = False) -> list[tuple[int, int, Any]]:
    """(partition, offset, value) of every bronze row of a dataset, duplicates included; with
    ``digest`` the value's MD5 hex instead of its bytes (for large runs)."""
    return table_rows(tables, "bronze", dataset, f'"partition", "offset", {"md5(value)" if digest else "value"}')


def lake_lineage(tables: Tables, dataset: str) -> list[Position]:
    """The raw position of every silver and quarantine row on the lake."""
    return [row for layer, (partition, offset) in LINEAGE.items()
            for row in table_rows(tables, layer, dataset, f"{partition}, {offset}")]


async def topic_lineage(settings: Settings, dataset: str) -> dict[str, list[Position]]:
    """The raw position of every record on the silver and quarantine topics, per layer."""
    out: dict[str, list[Position]] = {}
    for layer, (partition, offset) in LINEAGE.items():
        rows = (orjson.loads(record.value) for record in await read_all(settings, names.topic(dataset, layer)))
        out[layer] = [(row[partition], row[offset]) for row in rows]
    return out


def silver_truth(tables: Tables, contract: Contract) -> dict[Key, dict[str, Any]]:
    """Every gold value recomputed in one batch over the silver table's rows."""
    con = sql.connect(threads=None)
    if not tables.register(con, "silver", names.table_path("silver", contract.dataset)):
        con.register("silver", contract.silver_schema.empty_table())
    return truth(con, "silver", contract)


def gold_lake_differences(tables: Tables, contract: Contract) -> list[str]:
    """Gold on the lake, each aggregate's table as it is, against the truth over the silver table. A
    gold table is a current-value table: it must hold exactly one row per (window, dimensions), so
    no reader needs to reduce it by ``revision``."""
    rows: dict[Key, dict[str, Any]] = {}
    problems = []
    for aggregate in contract.aggregates:
        path = names.table_path("gold", contract.dataset, aggregate.name)
        table = tables.read(path)
        if table is None:
            problems.append(f"no gold table {path} yet")
            continue
        for row in table.to_pylist():
            key = gold_key(row, contract)
            if key in rows:
                problems.append(f"{path} holds {key} more than once")
            rows[key] = row
    if not rows:  # the truth of an empty silver table is empty too: nothing would be compared
        return problems + ["no gold rows on the lake yet"]
    return problems + differences(silver_truth(tables, contract), rows)


async def gold_topic_differences(settings: Settings, tables: Tables, contract: Contract) -> list[str]:
    """The compacted gold topic (latest record per key) against the truth over silver on the lake."""
    records = await read_all(settings, names.gold_topic(contract.dataset))
    latest = {record.key: orjson.loads(record.value) for record in records}
    expected = await asyncio.to_thread(silver_truth, tables, contract)
    return differences(expected, {gold_key(value, contract): value for value in latest.values()})


async def wait_gold_equals_truth(tables: Tables, contract: Contract, timeout_s: float) -> list[str]:
    """Poll until gold on the lake equals the truth over silver; [] then, else the last differences."""
    deadline = time.monotonic() + timeout_s
    problems = ["not compared yet"]
    while time.monotonic() < deadline:
        try:
            problems = await asyncio.to_thread(gold_lake_differences, tables, contract)
        except (duckdb.Error, OSError, DeltaError) as exc:  # the lake unreachable for a moment: look again
            problems = [repr(exc)]
        if not problems:
            return problems
        await asyncio.sleep(2)
    return problems


# ---------------------------------------------------------------------------------- a whole run
@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def summary(problems: list[str], fine: str) -> str:
    """A check's detail: ``fine``, or how many problems and the first few."""
    if not problems:
        return fine
    return f"{len(problems)} differences, e.g. " + " | ".join(problems[:3])


class PipelineVerifier:
    """Every check above for a set of datasets after a run: read what raw holds, wait until the
    lake has settled, then judge each layer. ``counts`` collects the figures for a report."""

    def __init__(self, settings: Settings, contracts: Mapping[str, Contract], say: Callable[[str], None] = print,
                 labels: Mapping[str, str] | None = None) -> None:
        self.settings, self.contracts, self.say = settings, dict(contracts), say
        self.datasets = list(contracts)
        self.tables = Tables.from_settings(settings)
        self.labels = {name: (labels or {}).get(name, name) for name in self.datasets}
        self.raw: dict[str, dict[Position, str]] = {}  # position -> MD5 hex of the value
        self.duplicates: dict[str, set[Position]] = {}
        self.counts: dict[str, Any] = {}

    async def load_raw(self) -> None:
        """Read every raw record once: its position, value digest, and whether it is an injected duplicate."""
        for name in self.datasets:
            digests: dict[Position, str] = {}
            duplicates: set[Position] = set()
            for record in await read_all(self.settings, names.raw_topic(name)):
                digests[(record.partition, record.offset)] = hashlib.md5(record.value).hexdigest()
                if dict(record.headers).get(INJECTED_HEADER) == b"duplicate":
                    duplicates.add((record.partition, record.offset))
            self.raw[name], self.duplicates[name] = digests, duplicates
            self.counts[f"{name}_raw"] = len(digests)
            self.counts[f"{name}_duplicates"] = len(duplicates)
            self.say(f"{self.labels[name]}: {len(digests):,} raw records, {len(duplicates):,} injected duplicates")

    def _expected_refined(self, name: str) -> set[Position]:
        return self.raw[name].keys() - self.duplicates[name]

    def _waiting_for(self) -> list[str]:
        """What the lake still lacks: rows in bronze, silver ∪ quarantine, or gold equal to the truth."""
        waiting = []
        for name in self.datasets:
            raw, want = len(self.raw[name]), len(self._expected_refined(name))
            bronze = table_stats(self.tables, "bronze", name).rows
            refined = sum(table_stats(self.tables, layer, name).rows for layer in LINEAGE)
            if bronze < raw:
                waiting.append(f"{name} bronze {bronze:,}/{raw:,}")
            if refined < want:
                waiting.append(f"{name} silver+quarantine {refined:,}/{want:,}")
        if not waiting:
            for name in self.datasets:
                if problems := gold_lake_differences(self.tables, self.contracts[name]):
                    waiting.append(f"{name} gold: {len(problems)} differences, e.g. {problems[0]}")
        return waiting

    async def settle(self, timeout_s: float) -> bool:
        """Wait until bronze, silver and quarantine hold at least every expected row on the lake and
        gold on the lake equals the truth; False when the time is up (the checks then say what differs)."""
        deadline = time.monotonic() + timeout_s
        last_said = 0.0
        while time.monotonic() < deadline:
            try:
                waiting = await asyncio.to_thread(self._waiting_for)
            except Exception as exc:  # noqa: BLE001 - an object replaced while read, or MinIO warming up
                waiting = [f"lake read failed: {exc!r}"[:200]]
            if not waiting:
                self.say("settled")
                return True
            if time.monotonic() - last_said > 15:
                self.say("waiting: " + "; ".join(waiting))
                last_said = time.monotonic()
            await asyncio.sleep(3)
        self.say(f"not settled within {timeout_s:.0f} s")
        return False

    async def checks(self) -> list[Check]:
        out: list[Check] = []
        for name in self.datasets:
            label = self.labels[name]
            out.append(await self._lake_check(f"{label}: bronze = raw, each once, byte-identical",
                                              lambda n=name: self._bronze_check(n)))
            out.append(await self._silver_topic_check(name, f"{label}: silver ∪ quarantine topics = raw − duplicates, each once"))
            out.append(await self._lake_check(f"{label}: silver ∪ quarantine lake = raw − duplicates, each once",
                                              lambda n=name: self._refined_check(n, lake_lineage(self.tables, n), "lake")))
            out.append(await self._lake_check(f"{label}: gold tables (one row per key) = truth",
                                              lambda n=name: self._gold_lake_check(n)))
            problems = await gold_topic_differences(self.settings, self.tables, self.contracts[name])
            out.append(Check(f"{label}: gold topic (latest per key) = truth", not problems,
                             summary(problems, "every window and group equal")))
        return out

    async def _lake_check(self, title: str, check: Callable[[], Check]) -> Check:
        """Run a lake check, again after 2 s up to five times when a lake read fails (an object
        replaced between listing and reading)."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(5), wait=wait_fixed(2), reraise=True,
                before_sleep=lambda state: log.warning("lake check failed, retrying", check=title,
                                                       attempt=state.attempt_number, error=repr(state.outcome.exception())),
            ):
                with attempt:
                    result = await asyncio.to_thread(check)
        except Exception as exc:  # noqa: BLE001 - the check reports it
            return Check(title, False, f"could not read the lake: {exc!r}")
        result.name = title
        return result

    def _gold_lake_check(self, name: str) -> Check:
        problems = gold_lake_differences(self.tables, self.contracts[name])
        return Check("", not problems, summary(problems, "every window and group equal"))

    def _bronze_check(self, name: str) -> Check:
        rows = bronze_rows(self.tables, name, digest=True)
        self.counts[f"{name}_bronze_rows"] = len(rows)
        problems = landed_exactly_once(rows, self.raw[name])
        return Check("", not problems, "; ".join(problems) or f"{len(self.raw[name]):,} records, each once, identical")

    def _refined_check(self, name: str, positions: list[Position], where: str) -> Check:
        self.counts[f"{name}_{where}_refined"] = len(positions)
        problems = refined_exactly_once(positions, self._expected_refined(name))
        return Check("", not problems, "; ".join(problems) or f"{len(self._expected_refined(name)):,} records, each once")

    async def _silver_topic_check(self, name: str, title: str) -> Check:
        lineage = await topic_lineage(self.settings, name)
        self.counts[f"{name}_silver"] = len(lineage["silver"])
        self.counts[f"{name}_quarantine"] = len(lineage["quarantine"])
        check = self._refined_check(name, lineage["silver"] + lineage["quarantine"], "topic")
        check.name = title
        return check
