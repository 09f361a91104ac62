"""``lab backfill`` against the real broker and MinIO, with both engines, after a contract change.

The stream lands three hours of orders (with dirty records and duplicates) in dataset A under the shipped
contract. Then the contract changes (version 2: a new derived field and a tightened rule) and one hour of
A is backfilled from bronze. The expectation is computed independently, by the stream itself: the same raw
records (same partitions, offsets, keys, values and timestamps) go to a fresh dataset B, whose
silver_refiner and gold_aggregator run with the new contract from the start. A's tables must then hold,
inside the range, exactly what B's stream produced, and outside it exactly what they held before; a rerun
and the other engine change nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from archlab.batch.backfill import backfill, contract_of
from archlab.batch.gold import BACKFILL_REVISION
from archlab.batch.span import Span
from archlab.cli.backfill import BackfillSettings
from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import make_producer
from archlab.kafka.lag import wait_caught_up
from archlab.lake.tables import Tables
from archlab.testing.verify import wait_gold_equals_truth
from tests.integration.conftest import read_all, wait_until
from tests.integration.test_silver import copy_contract

pytestmark = [pytest.mark.integration, pytest.mark.spark]

HOUR_MS = 3_600_000
#: Version 2 of the contract: a derived field, and a rule that refuses orders of more than 3 units.
NEW_DERIVED = "  - {name: bulky, type: bool, sql: quantity >= 3, description: three units or more}\n"
NEW_RULE = ("  - name: at_most_three_units\n    sql: quantity IS NULL OR quantity <= 3\n"
            "    description: more than three units in one line\n")
#: Every dirty kind but late events: a batch counts those in their windows, the stream in late_events.
DIRTY = DirtyRates().model_copy(update={"late": 0.0})


def _env(dataset: str, contracts: Path) -> dict[str, str]:
    return {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(contracts), "LAB_SILVER_GROUP": f"silver-{dataset}",
            "LAB_GOLD_GROUP": f"gold-{dataset}", "LAB_BRONZE_GROUP": f"bronze-{dataset}", "LAB_INSTANCE_ID": "test",
            "LAB_FLUSH_INTERVAL_S": "0.5"}


def _change_contract(path: Path, dataset: str | None = None) -> None:
    text = path.read_text()
    for old, new in (("version: 1", "version: 2"), ("derived:\n", "derived:\n" + NEW_DERIVED),
                     ("rules:\n", "rules:\n" + NEW_RULE)):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    if dataset:
        text = text.replace(text.split("\n", 2)[1], f"dataset: {dataset}", 1)
    path.write_text(text)


def _rows(tables: Tables, path: str) -> list[dict[str, Any]]:
    table = tables.read(path)
    return [] if table is None else table.to_pylist()


async def _run_stream(settings: Settings, tables: Tables, dataset: str, contracts: Path, start_service,
                      services: Iterable[str]) -> None:
    """Run the services until every raw record is refined and landed and gold equals silver, then stop them."""
    started = [start_service(name, **_env(dataset, contracts)) for name in services]
    await wait_caught_up(settings, f"silver-{dataset}", [names.raw_topic(dataset)], timeout_s=180)
    raw = len(await read_all(settings, names.raw_topic(dataset)))
    silver = len(await read_all(settings, names.silver_topic(dataset)))
    quarantine = len(await read_all(settings, names.quarantine_topic(dataset)))

    def landed() -> bool:
        counts = {layer: tables.stats(names.table_path(layer, dataset)) for layer in ("silver", "quarantine", "bronze")}
        want = {"silver": silver, "quarantine": quarantine, "bronze": raw if "bronze_sink" in services else None}
        return all(want[layer] is None or (counts[layer] is not None and counts[layer].rows == want[layer])
                   for layer in want)

    await asyncio.to_thread(wait_until, landed, 120, f"{dataset}'s tables to hold every record")
    problems = await wait_gold_equals_truth(tables, load_contract(contracts / f"{dataset}.yaml"), 180)
    assert problems == [], "\n".join(problems[:10])
    for service in started:
        assert service.terminate() == 0, service.log_tail()


async def _copy_raw(settings: Settings, source: str, target: str) -> None:
    """Every raw record of ``source`` to the same partition of ``target``, in order, with its key, value and
    timestamp, so that each lands at the same offset of the fresh topic."""
    producer = make_producer(settings)
    await producer.start()
    try:
        sent = [await producer.send(names.raw_topic(target), r.value, key=r.key, partition=r.partition,
                                    timestamp_ms=r.timestamp)
                for r in sorted(await read_all(settings, names.raw_topic(source)), key=lambda r: (r.partition, r.offset))]
        await producer.flush()
        for future in sent:
            assert (await future).offset >= 0
    finally:
        await producer.stop()


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _record_ms(row: dict[str, Any]) -> int:
    """A quarantined record's time as the test reads it: its event time if the payload has a readable ISO one,
    else its arrival."""
    try:
        stamp = orjson.loads(row["payload"])["event_time"]
        return int(stamp) if isinstance(stamp, int) else _ms(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
        return _ms(row["kafka_timestamp"])


def _without(row: dict[str, Any], *columns: str) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in row.items() if k not in columns))


def _expected_silver(before: list[dict], fresh: list[dict], span: Span, event_time: str) -> list[tuple]:
    kept = [{**row, "bulky": None} for row in before if not span.holds(_ms(row[event_time]))]
    return sorted(_without(row) for row in kept + [row for row in fresh if span.holds(_ms(row[event_time]))])


def _expected_quarantine(before: list[dict], fresh: list[dict], span: Span, valid_now: set[tuple[int, int]],
                         ) -> list[tuple]:
    fresh_in = [row for row in fresh if span.holds(_record_ms(row))]
    replaced = {(r["source_partition"], r["source_offset"]) for r in fresh_in} | valid_now
    kept = [row for row in before if (row["source_partition"], row["source_offset"]) not in replaced]
    return sorted(_without(row, "dataset") for row in kept + fresh_in)


def _gold_view(rows: list[dict], span: Span, inside: bool) -> list[tuple]:
    """Gold rows on one side of the range; inside it, without the stream's bookkeeping (revision, watermark, and
    final: the stream marks a window final when a later batch reaches its shuffle partition, maybe after the
    test stopped it)."""
    picked = [row for row in rows if span.holds(_ms(row["window_start"])) == inside]
    return sorted(_without(row, *(("revision", "watermark", "final") if inside else ())) for row in picked)


def _snapshot(tables: Tables, dataset: str, contract_path: Path) -> dict[str, list[tuple]]:
    contract = load_contract(contract_path)
    paths = [names.table_path(layer, dataset) for layer in ("silver", "quarantine")]
    paths += [names.table_path("gold", dataset, a.name) for a in contract.aggregates]
    return {path: sorted(_without(row) for row in _rows(tables, path)) for path in paths}


async def test_backfill_after_a_contract_change_equals_the_stream_with_the_new_contract_on_both_engines(
    settings: Settings, tables: Tables, tmp_path: Path, start_service
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    contract_path = folder / f"{dataset}.yaml"
    summary = await produce_synthetic(settings, "orders", count=6_000, rate=0, seed=13, dirty=DIRTY,
                                      history=timedelta(hours=3), topic=names.raw_topic(dataset))
    assert summary.sent == 6_000
    await _run_stream(settings, tables, dataset, folder, start_service, ["bronze_sink", "silver_refiner",
                                                                         "gold_aggregator"])
    silver_v1 = _rows(tables, names.table_path("silver", dataset))
    quarantine_v1 = _rows(tables, names.table_path("quarantine", dataset))
    gold_v1 = {a.name: _rows(tables, names.table_path("gold", dataset, a.name))
               for a in load_contract(contract_path).aggregates}

    # Version 2 of A's contract; B: the same raw records, refined by the stream under version 2 from the start.
    _change_contract(contract_path)
    fresh_folder = tmp_path / "fresh"
    fresh_folder.mkdir()
    fresh = await copy_contract(settings, fresh_folder, "orders")
    _change_contract(fresh_folder / f"{fresh}.yaml", fresh)
    await _copy_raw(settings, dataset, fresh)
    await _run_stream(settings, tables, fresh, fresh_folder, start_service, ["silver_refiner", "gold_aggregator"])

    hour = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    span = Span(hour - 2 * HOUR_MS, hour - HOUR_MS)
    contract = contract_of(folder, dataset)
    backfill_settings = BackfillSettings(contracts_dir=folder)  # type: ignore[call-arg]  # LAB_* of the stack

    # DuckDB, through the command a user types.
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "archlab.cli.main", "backfill", "--dataset", dataset,
         "--from", datetime.fromtimestamp(span.start_ms / 1000, UTC).isoformat(),
         "--to", datetime.fromtimestamp(span.end_ms / 1000, UTC).isoformat()],
        capture_output=True, text=True, env={**os.environ, "LAB_CONTRACTS_DIR": str(folder)}, cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nlab backfill (duckdb, a process): {time.perf_counter() - started:.1f} s")

    silver_new = _rows(tables, names.table_path("silver", fresh))
    silver = _rows(tables, names.table_path("silver", dataset))
    assert sorted(map(_without, silver)) == _expected_silver(silver_v1, silver_new, span, contract.event_time)
    in_range = [row for row in silver if span.holds(_ms(row[contract.event_time]))]
    assert in_range and all(row["_contract_version"] == 2 and row["bulky"] == (row["quantity"] >= 3)
                            for row in in_range)

    valid_now = {(r["_source_partition"], r["_source_offset"]) for r in silver_new
                 if span.holds(_ms(r[contract.event_time]))}
    quarantine_new = _rows(tables, names.table_path("quarantine", fresh))
    quarantine = _rows(tables, names.table_path("quarantine", dataset))
    assert sorted(_without(row, "dataset") for row in quarantine) == _expected_quarantine(
        quarantine_v1, quarantine_new, span, valid_now)
    tightened = [row for row in quarantine if span.holds(_record_ms(row))
                 and any(reason["check"] == "at_most_three_units" for reason in row["reasons"])]
    assert len(in_range) > len(tightened) > 0, "the tightened rule should refuse some orders, not most"

    for aggregate in contract.aggregates:
        gold = _rows(tables, names.table_path("gold", dataset, aggregate.name))
        expected_inside = _gold_view(_rows(tables, names.table_path("gold", fresh, aggregate.name)), span, True)
        got_inside = _gold_view(gold, span, True)
        assert got_inside == expected_inside, (aggregate.name, sorted(set(got_inside) ^ set(expected_inside))[:4])
        assert _gold_view(gold, span, False) == _gold_view(gold_v1[aggregate.name], span, False), aggregate.name
        assert {(row["revision"], row["final"]) for row in gold if span.holds(_ms(row["window_start"]))} == {
            (BACKFILL_REVISION, True)}

    beyond = _lab_backfill(folder, "--dataset", dataset, "--from", datetime.fromtimestamp(hour / 1000, UTC).isoformat())
    assert beyond.returncode == 2 and "still open in the stream" in beyond.stderr, beyond.stderr

    after_duckdb = _snapshot(tables, dataset, contract_path)
    versions = {path: tables.open(path).version() for path in after_duckdb}

    # A rerun, then Spark over the same range: the same tables, one new commit per table each time.
    rerun = await asyncio.to_thread(backfill, backfill_settings, folder, dataset, span, "duckdb")
    assert _snapshot(tables, dataset, contract_path) == after_duckdb
    on_spark = await asyncio.to_thread(backfill, backfill_settings, folder, dataset, span, "spark")
    assert _snapshot(tables, dataset, contract_path) == after_duckdb
    assert {path: tables.open(path).version() for path in after_duckdb} == {path: v + 2 for path, v in versions.items()}
    print(f"backfill of {rerun.bronze_rows:,} bronze rows: duckdb {rerun.rebuild_s:.2f} s "
          f"({rerun.rows_per_s:,.0f} rows/s); spark start {on_spark.startup_s:.1f} s, rebuild "
          f"{on_spark.rebuild_s:.2f} s ({on_spark.rows_per_s:,.0f} rows/s)")


def _lab_backfill(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archlab.cli.main", "backfill", *arguments],
                          capture_output=True, text=True, env={**os.environ, "LAB_CONTRACTS_DIR": str(folder)},
                          cwd=PROJECT_ROOT, timeout=120)


async def test_backfill_refuses_what_it_cannot_do_with_a_clear_message(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    cases = {
        ("--dataset", "nosuch"): "unknown dataset 'nosuch'",
        ("--dataset", dataset, "--from", "2026-01-02", "--to", "2026-01-01"): "is not before --to",
        ("--dataset", dataset, "--from", "yesterday"): "is not an ISO-8601 time",
        ("--dataset", dataset): "no bronze table",
    }
    for arguments, message in cases.items():
        done = _lab_backfill(folder, *arguments)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (arguments,
                                                                                                   done.stderr)
