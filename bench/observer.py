"""The observer's cost: CPU (fraction of one core) and RSS of ``services.observer`` while dq records
arrive at the rate a 25k events/s pipeline writes them.

That rate: silver_refiner writes one dq record per check and batch — for ``orders`` 45 checks plus the
``duplicates`` row, 46 records — and gold_aggregator one per aggregate and batch (3 for ``orders``).
Each stage commits one Kafka transaction per batch; at 25k events/s and 2,500 events per transaction
(10 transactions/s per stage: under load transactions grow rather than multiply, so this is a high
estimate) that is 10 × 46 + 10 × 3 = 490 dq records/s, sent here as such batches. Raw records are sent
too (100/s: the observer reads only raw's end offsets, so their number does not matter) so freshness is
evaluated as in production. The observer's start (table recovery, first assignment) is not measured;
its CPU while idle (no dq records, samples every 5 s) is, for comparison, before records are sent.

    .venv/bin/python -m bench observer                 # 29,400 dq records: about 60 s measured
    .venv/bin/python -m bench observer --events 5000   # a short run
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from archlab.core import names
from archlab.kafka.clients import make_producer
from archlab.testing.processes import ServiceProcess
from bench.common import copy_contract, fresh_dataset, report, stack_env, throwaway_stack

CHECKS_PER_SILVER_BATCH = 46  # orders: 45 checks + the duplicates row
AGGREGATES = 3  # orders' aggregates: one lateness row per gold batch each
BATCHES_PER_S = 10
EVENTS_PER_BATCH = 2_500  # 25,000 events/s / 10 batches/s
DQ_PER_S = BATCHES_PER_S * (CHECKS_PER_SILVER_BATCH + AGGREGATES)
STARTUP_S = 20.0
IDLE_S = 10.0
WARM_UP_S = 10.0
TARGET_CORE_FRACTION = 0.1


def silver_batch(dataset: str, quarantined: int) -> list[tuple[bytes, bytes]]:
    """The dq records silver writes for one batch of ``EVENTS_PER_BATCH`` (key, value)."""
    rows = [(f"check_{i}", EVENTS_PER_BATCH - quarantined // 3, quarantined // 3)
            for i in range(CHECKS_PER_SILVER_BATCH - 1)]
    rows.append(("duplicates", EVENTS_PER_BATCH - quarantined, 0))
    return [(rule.encode(), orjson.dumps({"dataset": dataset, "minute": "2026-01-01T00:00:00Z", "rule": rule,
                                          "passed": passed, "failed": failed, "warned": 0,
                                          "records": EVENTS_PER_BATCH})) for rule, passed, failed in rows]


def gold_batch(dataset: str) -> list[tuple[bytes, bytes]]:
    return [(f"late_beyond_grace.a{i}".encode(),
             orjson.dumps({"dataset": dataset, "minute": "2026-01-01T00:00:00Z", "rule": f"late_beyond_grace.a{i}",
                           "passed": EVENTS_PER_BATCH - 5, "failed": 5, "warned": 0, "records": EVENTS_PER_BATCH}))
            for i in range(AGGREGATES)]


async def send_dq(settings: object, dataset: str, records: int, started: asyncio.Event) -> tuple[int, float]:
    """Send ``records`` dq records at ``DQ_PER_S`` in batch-sized bursts; (sent, seconds) after warm-up."""
    producer = make_producer(settings)  # type: ignore[arg-type]
    await producer.start()
    sent, measured_from = 0, None
    try:
        begin = time.monotonic()
        tick = 0
        while sent < records:
            if measured_from is None and time.monotonic() - begin >= WARM_UP_S:
                measured_from, sent = time.monotonic(), 0
                started.set()
            batch = [*silver_batch(dataset, quarantined=25), *gold_batch(dataset)]
            for key, value in batch:
                await producer.send(names.dq_topic(dataset), value, key=key)
            await producer.send(names.raw_topic(dataset), b'{"any": "event"}', key=b"k")
            sent += len(batch)
            tick += 1
            await asyncio.sleep(max(0.0, begin + tick / BATCHES_PER_S - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.monotonic() - (measured_from or begin)


async def measure(records: int) -> dict[str, object]:
    with throwaway_stack("bench-observer") as (_, settings), tempfile.TemporaryDirectory() as folder:
        dataset = await fresh_dataset(settings)
        copy_contract(Path(folder), dataset)
        env = stack_env(settings, LAB_DATASETS=dataset, LAB_CONTRACTS_DIR=folder, LAB_LOG_LEVEL="WARNING",
                        LAB_OBSERVER_STATE_DIR=str(Path(folder) / "state"), LAB_METRICS_PORT="0")
        observer = ServiceProcess("observer", env, Path(folder) / "observer.log")
        try:
            process = psutil.Process(observer.pid)
            await asyncio.sleep(STARTUP_S)  # started, tables recovered, partitions assigned: nothing arrives yet
            idle_before = sum(process.cpu_times()[:2])
            await asyncio.sleep(IDLE_S)
            idle_cpu_s = sum(process.cpu_times()[:2]) - idle_before
            started = asyncio.Event()
            sending = asyncio.create_task(send_dq(settings, dataset, records, started))
            await started.wait()
            cpu_before, rss = sum(process.cpu_times()[:2]), []
            while not sending.done():
                rss.append(process.memory_info().rss)
                await asyncio.sleep(1.0)
            sent, seconds = await sending
            cpu_s = sum(process.cpu_times()[:2]) - cpu_before
            alive = observer.alive()
        finally:
            observer.terminate()
    return {
        "dq_records_per_s_target": DQ_PER_S,
        "dq_records_per_s_sent": round(sent / seconds, 1),
        "measured_s": round(seconds, 1),
        "observer_cpu_core_fraction": round(cpu_s / seconds, 3),
        "observer_idle_cpu_core_fraction": round(idle_cpu_s / IDLE_S, 3),
        "observer_rss_mb_mean": round(sum(rss) / len(rss) / 2**20, 1) if rss else None,
        "observer_rss_mb_peak": round(max(rss) / 2**20, 1) if rss else None,
        "observer_alive": str(alive),
        "target_core_fraction": TARGET_CORE_FRACTION,
    }


def main(events: int = 60 * DQ_PER_S) -> None:
    report("observer", "observer benchmark: CPU and RSS at a 25k events/s pipeline's dq rate",
           asyncio.run(measure(events)))
