"""silver_refiner against the real broker and MinIO: every raw record ends up exactly once in
silver or quarantine (counted duplicates aside), with the right reasons and values."""

from __future__ import annotations

import asyncio
import csv
import random
import shutil
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.ingest.generators import DIRTY_KINDS, INJECTED_HEADER, DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import KeyedBatchSender, make_producer
from archlab.kafka.lag import wait_caught_up
from archlab.kafka.topics import ensure_topics
from archlab.lake.tables import Tables
from archlab.testing.verify import lake_lineage, table_rows
from tests.integration.conftest import kill9_repeatedly, read_all, wait_until

pytestmark = pytest.mark.integration

#: The quarantine check each injected kind must produce (a prefix of the reason's ``check``).
EXPECTED_CHECK = {
    "malformed_json": "json",
    "non_utf8": "utf8",
    "missing_field": ".required",
    "wrong_type": ".type",
    "out_of_range": ".min",
    "unknown_enum": ".allowed",
    "future": "event_not_in_future",
    "oversized": "size",
}
VALID_KINDS = {"late", "duplicate"}


async def copy_contract(settings: Settings, folder: Path, original: str) -> str:
    """A fresh dataset described by a copy of a shipped contract, with its own topics."""
    name = f"{original[0]}{uuid.uuid4().hex[:10]}"
    if not (folder / "reference").exists():
        shutil.copytree(PROJECT_ROOT / "contracts" / "reference", folder / "reference")
    text = (PROJECT_ROOT / "contracts" / f"{original}.yaml").read_text()
    (folder / f"{name}.yaml").write_text(text.replace(f"dataset: {original}", f"dataset: {name}", 1))
    await ensure_topics(settings, [name])
    return name


@pytest.fixture
async def orders_like(settings: Settings, tmp_path: Path) -> tuple[str, Path]:
    folder = tmp_path / "contracts"
    folder.mkdir()
    return await copy_contract(settings, folder, "orders"), folder


def _env(dataset: str, contracts: Path) -> dict[str, str]:
    return {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(contracts), "LAB_SILVER_GROUP": f"silver-{dataset}",
            "LAB_INSTANCE_ID": "test", "LAB_FLUSH_INTERVAL_S": "0.5"}


def lineage(silver: list, quarantine: list) -> list[tuple[int, int]]:
    rows = [orjson.loads(r.value) for r in silver]
    bad = [orjson.loads(r.value) for r in quarantine]
    return [(r["_source_partition"], r["_source_offset"]) for r in rows] + [
        (q["source_partition"], q["source_offset"]) for q in bad
    ]


async def _settled(settings: Settings, dataset: str, expected: int, timeout: float) -> tuple[list, list]:
    async def counts() -> tuple[list, list]:
        return await read_all(settings, names.silver_topic(dataset)), await read_all(settings, names.quarantine_topic(dataset))

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        silver, quarantine = await counts()
        if len(silver) + len(quarantine) >= expected or asyncio.get_running_loop().time() > deadline:
            return silver, quarantine
        await asyncio.sleep(1)


async def test_dirty_kinds_quarantined_with_reasons_and_valid_rows_typed(
    settings: Settings, tables: Tables, orders_like: tuple[str, Path], start_service
) -> None:
    dataset, contracts = orders_like
    dirty = DirtyRates(**{kind: 0.02 for kind in DIRTY_KINDS} | {"oversized": 0.001})
    await produce_synthetic(settings, "orders", count=6_000, rate=0, seed=21, dirty=dirty, topic=names.raw_topic(dataset))
    raw = await read_all(settings, names.raw_topic(dataset))
    kind_of = {(r.partition, r.offset): dict(r.headers).get(INJECTED_HEADER, b"").decode() for r in raw}
    duplicates = [k for k, kind in kind_of.items() if kind == "duplicate"]

    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    silver, quarantine = await _settled(settings, dataset, len(raw) - len(duplicates), 120)
    assert refiner.alive(), refiner.log_tail()

    landed = lineage(silver, quarantine)
    assert len(landed) == len(set(landed)), "a raw record came out twice"
    assert set(landed) == set(kind_of) - set(duplicates)

    for record in quarantine:
        row = orjson.loads(record.value)
        kind = kind_of[(row["source_partition"], row["source_offset"])]
        assert kind not in VALID_KINDS and kind, f"a {kind or 'clean'} record was quarantined: {row['reasons']}"
        checks = [reason["check"] for reason in row["reasons"]]
        assert any(EXPECTED_CHECK[kind] in check for check in checks), f"{kind}: {checks}"
    assert {kind_of[(orjson.loads(r.value)["source_partition"], orjson.loads(r.value)["source_offset"])]
            for r in quarantine} == set(EXPECTED_CHECK)

    rates = {row["currency"]: Decimal(row["rate_to_eur"])
             for row in csv.DictReader((contracts / "reference" / "fx_rates.csv").open())}
    raw_values = {(r.partition, r.offset): orjson.loads(r.value) for r in raw if kind_of[(r.partition, r.offset)] in ("", "late")}
    checked = 0
    for record in silver:
        row = orjson.loads(record.value)
        sent = raw_values.get((row["_source_partition"], row["_source_offset"]))
        if sent is None:
            continue
        assert row["order_id"] == sent["order_id"] and int(row["quantity"]) == sent["quantity"]
        assert Decimal(str(row["unit_price"])) == Decimal(str(sent["unit_price"]))
        expected_eur = Decimal(sent["quantity"]) * Decimal(str(sent["unit_price"])) * rates[sent["currency"]]
        assert abs(Decimal(str(row["amount_eur"])) - expected_eur) <= Decimal("0.01"), row
        assert record.key == sent["order_id"].encode()
        checked += 1
    assert checked > 5_000 * 0.7

    await asyncio.to_thread(wait_until, lambda: len(lake_lineage(tables, dataset)) >= len(landed), 60,
                            "silver and quarantine on the lake")
    assert sorted(lake_lineage(tables, dataset)) == sorted(landed), "the lake's tables differ from the topics"

    def dq_counts_duplicates() -> bool:  # failed: each duplicate; passed: each valid row seen first
        found = table_rows(tables, "dq", dataset, "sum(failed) FILTER (WHERE rule = 'duplicates'), "
                                                  "sum(passed) FILTER (WHERE rule = 'duplicates')")
        return bool(found) and found[0] == (len(duplicates), len(silver))

    await asyncio.to_thread(wait_until, dq_counts_duplicates, 60, "the dq table to count every duplicate")
    assert refiner.terminate() == 0, refiner.log_tail()


async def test_second_dataset_runs_beside_orders_in_one_refiner(
    settings: Settings, tmp_path: Path, start_service
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    orders = await copy_contract(settings, folder, "orders")
    sensors = await copy_contract(settings, folder, "sensors")
    await produce_synthetic(settings, "orders", count=1_500, rate=0, seed=2, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(orders))
    await produce_synthetic(settings, "sensors", count=2_500, rate=0, seed=2, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(sensors))
    env = _env(orders, folder) | {"LAB_DATASETS": f"{orders},{sensors}"}
    refiner = start_service("silver_refiner", **env)
    for dataset, count in ((orders, 1_500), (sensors, 2_500)):
        silver, quarantine = await _settled(settings, dataset, count, 120)
        assert (len(silver), len(quarantine)) == (count, 0), refiner.log_tail()
    row = orjson.loads(silver[0].value)
    assert {"device_id", "sensor_type", "value", "unit"} <= row.keys() and row["_contract_version"] >= 1
    assert refiner.terminate() == 0, refiner.log_tail()


async def test_a_trickle_is_refined_in_batches_closed_by_the_deadline_not_per_record(
    settings: Settings, orders_like: tuple[str, Path], start_service
) -> None:
    """At a low rate a fetch waits up to LAB_BATCH_WAIT_MS for more records: the fixed costs of a batch
    (the refine query, a transaction) are paid a few times a second, not once per record or two."""
    dataset, contracts = orders_like
    refiner = start_service("silver_refiner", **_env(dataset, contracts), LAB_BATCH_WAIT_MS="1000")
    await refiner.working()
    await produce_synthetic(settings, "orders", count=120, rate=40, seed=8, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(dataset))  # three seconds, a record every 25 ms
    silver, _ = await _settled(settings, dataset, 120, 60)
    assert len(silver) == 120, refiner.log_tail()
    batches = refiner.metric("lab_silver_emit_seconds_count", dataset=dataset)
    assert 1 <= batches <= 8, f"{batches:.0f} batches for 120 records sent over 3 s"
    assert refiner.terminate() == 0, refiner.log_tail()


async def _send_values(settings: Settings, topic: str, records: list) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = await KeyedBatchSender.for_topic(producer, topic)
        for record in records:
            await sender.send(record.key, record.value)
        assert not (await sender.flush())[1]
    finally:
        await producer.stop()


async def test_duplicate_arriving_after_a_restart_is_dropped(
    settings: Settings, orders_like: tuple[str, Path], start_service
) -> None:
    dataset, contracts = orders_like
    await produce_synthetic(settings, "orders", count=2_000, rate=0, seed=5, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(dataset))
    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    silver, _ = await _settled(settings, dataset, 2_000, 90)
    assert len(silver) == 2_000
    assert refiner.terminate() == 0, refiner.log_tail()

    raw = await read_all(settings, names.raw_topic(dataset))
    await _send_values(settings, names.raw_topic(dataset), random.Random(1).sample(raw, 300))
    await produce_synthetic(settings, "orders", count=100, rate=0, seed=99, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(dataset))  # new events after the resent ones
    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    # Offsets are committed in the transaction that writes their output: once the refiner has committed
    # the whole raw topic, anything it would ever write for it (a wrongly admitted duplicate too) is there.
    await wait_caught_up(settings, f"silver-{dataset}", [names.raw_topic(dataset)], timeout_s=90)
    silver = await read_all(settings, names.silver_topic(dataset))
    quarantine = await read_all(settings, names.quarantine_topic(dataset))
    assert refiner.terminate() == 0, refiner.log_tail()
    assert len(quarantine) == 0
    event_ids = [orjson.loads(r.value)["event_id"] for r in silver]
    assert len(event_ids) == len(set(event_ids)) == 2_100


async def test_kill9_of_silver_refiner_five_times_keeps_exactly_once(
    settings: Settings, tables: Tables, orders_like: tuple[str, Path], start_service
) -> None:
    dataset, contracts = orders_like
    env = _env(dataset, contracts)
    producing = asyncio.create_task(
        produce_synthetic(settings, "orders", count=100_000, rate=3_000, seed=8, topic=names.raw_topic(dataset))
    )
    refiner = await kill9_repeatedly(lambda: start_service("silver_refiner", **env), times=5, seed=9)
    assert (await producing).sent == 100_000
    raw = await read_all(settings, names.raw_topic(dataset))
    duplicates = {(r.partition, r.offset) for r in raw if dict(r.headers).get(INJECTED_HEADER) == b"duplicate"}
    silver, quarantine = await _settled(settings, dataset, len(raw) - len(duplicates), 180)
    landed = lineage(silver, quarantine)
    await asyncio.to_thread(wait_until, lambda: len(lake_lineage(tables, dataset)) >= len(landed), 90,
                            "silver and quarantine on the lake")
    await refiner.working()  # the last restart came up (and so can stop gracefully)
    assert refiner.terminate() == 0, refiner.log_tail()
    assert len(landed) == len(set(landed)), f"{len(landed) - len(set(landed))} records came out twice"
    assert set(landed) == {(r.partition, r.offset) for r in raw} - duplicates
    assert sorted(lake_lineage(tables, dataset)) == sorted(landed), "the lake's tables differ from the topics"


def test_broken_contract_is_refused_at_start_naming_file_rule_and_problem(tmp_path: Path, start_service) -> None:
    folder = tmp_path / "contracts"
    shutil.copytree(PROJECT_ROOT / "contracts", folder)
    path = folder / "orders.yaml"
    path.write_text(path.read_text().replace("event_time: event_time", "event_time: placed_at", 1))
    service = start_service("silver_refiner", LAB_DATASETS="orders", LAB_CONTRACTS_DIR=str(folder))
    assert service.wait(60) != 0
    log = service.log_path.read_text()
    assert str(path) in log and "placed_at" in log and "Traceback" not in log, log
