"""The producer against the real broker: replay of files in order, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.ingest.produce import replay_file
from archlab.kafka.clients import end_offsets, topic_partitions
from archlab.kafka.topics import ensure_topics
from tests.integration.conftest import read_topic
from tests.integration.test_silver import copy_contract

pytestmark = pytest.mark.integration


def _rows(count: int) -> list[dict[str, object]]:
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    return [
        {"event_id": f"00000000-0000-4000-8000-{i:012d}", "event_time": (start + timedelta(seconds=i)).isoformat(),
         "order_id": f"O-{i % 7:08d}", "customer_id": "C-000001", "product_id": "P-00001", "category": "books",
         "quantity": 1 + i % 3, "unit_price": 9.99, "currency": "EUR", "country": "DE", "payment_method": "card",
         "channel": "web", "coupon_code": None}
        for i in range(count)
    ]


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
async def test_replay_sends_every_row_keyed_in_file_order(
    settings: Settings, fresh_dataset: str, tmp_path: Path, suffix: str
) -> None:
    contract = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml").model_copy(update={"dataset": fresh_dataset})
    rows = _rows(700)
    path = tmp_path / f"orders{suffix}"
    _write(path, rows)
    summary = await replay_file(settings, contract, path)
    assert (summary.sent, summary.failed) == (700, 0)
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    values = [orjson.loads(value) for _, value in sorted(sent.items())]
    assert sorted(v["event_id"] for v in values) == [r["event_id"] for r in rows]
    for partition in {p for p, _ in sent}:  # per key (and so per partition) the file order holds
        ids = [orjson.loads(v)["event_id"] for (p, _), v in sorted(sent.items()) if p == partition]
        assert ids == sorted(ids)


async def test_replay_at_event_time_speed_is_paced(settings: Settings, fresh_dataset: str, tmp_path: Path) -> None:
    contract = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml").model_copy(update={"dataset": fresh_dataset})
    path = tmp_path / "orders.jsonl"
    _write(path, _rows(401))  # 400 s of event time
    summary = await replay_file(settings, contract, path, speed=200)  # -> about 2 s
    assert summary.sent == 401 and 1.5 <= summary.seconds <= 6


async def test_producer_service_flushes_and_summarises_on_sigterm(settings: Settings, start_service) -> None:
    """Nothing sent is lost at a SIGTERM: the service exits 0 and its summary record (read as JSON,
    field by field) counts exactly what the topic gained."""
    raw = names.raw_topic("orders")
    await ensure_topics(settings, ["orders"])  # this session's throw-away stack; no other test writes it
    partitions = await topic_partitions(settings, raw)
    before = sum((await end_offsets(settings, partitions)).values())  # raw is not transactional: offsets are records
    producer = start_service("producer", LAB_DATASETS="orders", LAB_PRODUCER_RATE="800", LAB_PRODUCER_SEED="3",
                             LAB_LOG_JSON="true")

    async def gained() -> int:
        return sum((await end_offsets(settings, partitions)).values()) - before

    async with asyncio.timeout(60):  # stop it mid-stream, once it has sent a fair amount
        while await gained() <= 500:
            await asyncio.sleep(0.2)
    assert producer.terminate() == 0, producer.log_tail()
    [summary] = [record for record in _json_records(producer.log_path) if record.get("event") == "summary"]
    assert summary["topic"] == raw and summary["failed"] == 0 and summary["sent"] > 500
    assert await gained() == summary["sent"]


def _json_records(path: Path) -> list[dict[str, object]]:
    """The service's structured records (LAB_LOG_JSON): one JSON object per line."""
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:  # not a record of ours (e.g. a library printing to stderr)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


async def test_a_restarted_producer_sends_new_events_and_a_logged_seed_replays_them(
        settings: Settings, start_service, tmp_path: Path) -> None:
    """Without LAB_PRODUCER_SEED each start draws a seed: a restart must not resend the events the
    pipeline has already de-duplicated (the dashboard would stand still for a day). The seed it logs
    replays its stream exactly."""
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    env = {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(folder), "LAB_PRODUCER_RATE": "0",
           "LAB_PRODUCER_COUNT": "300", "LAB_LOG_JSON": "true"}
    seeds: list[int] = []
    ids: list[set[str]] = []  # per run, the event ids it sent
    seen: set[tuple[int, int]] = set()
    for seed in ("", "", None):  # unset (as compose passes it), unset, then the first run's logged seed
        producer = start_service("producer", **env, LAB_PRODUCER_SEED=str(seeds[0]) if seed is None else seed)
        assert await asyncio.to_thread(producer.wait, 60) == 0, producer.log_tail()
        [logged] = [r["seed"] for r in _json_records(producer.log_path) if r.get("event") == "stream seed"]
        records = await read_topic(settings, names.raw_topic(dataset))
        sent = {at: value for at, value in records.items() if at not in seen}
        seen |= set(sent)
        assert len(sent) == 300
        seeds.append(logged)
        ids.append(_event_ids(sent.values()))
    assert seeds[0] != seeds[1] and seeds[2] == seeds[0]
    assert len(ids[0]) > 250 and not ids[0] & ids[1]  # (a few % of a run are injected duplicates or malformed)
    assert ids[2] == ids[0]


def _event_ids(values: Iterable[bytes]) -> set[str]:
    """The event ids of the records that carry one (the producer injects a few malformed records)."""
    found = set()
    for value in values:
        with suppress(orjson.JSONDecodeError):
            record = orjson.loads(value)
            if isinstance(record, dict) and isinstance(record.get("event_id"), str):
                found.add(record["event_id"])
    return found
