"""bronze_sink landed events/s against the consume-only rate of the same topic, same run.

    .venv/bin/python -m bench bronze --events 300000
"""

from __future__ import annotations

import asyncio
import time

from archlab.bronze import BronzeEncoder
from archlab.kafka import make_consumer
from archlab.lake import Lake
from archlab.landing import LakeSink, RollPolicy
from archlab.produce import produce_synthetic
from bench.common import consume_only_rate, fresh_dataset, report, throwaway_stack, wait_committed


async def _run(events: int) -> dict[str, object]:
    with throwaway_stack() as settings:
        dataset = await fresh_dataset(settings)
        topic = f"{dataset}.raw"
        produced = await produce_synthetic(settings, "orders", count=events, rate=0, seed=1, topic=topic)
        consumed, consume_s = await consume_only_rate(settings, topic)

        group = f"bronze-{dataset}"
        consumer = make_consumer(settings, group_id=group)
        sink = LakeSink(consumer, Lake.from_settings(settings), BronzeEncoder(), group_id=group,
                        policy=RollPolicy(settings.flush_records, settings.flush_bytes, 1.0))
        consumer.subscribe([topic], listener=sink.listener)
        await consumer.start()
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(sink.run(stop))
        await wait_committed(settings, group, topic, poll_s=0.05)
        land_s = time.perf_counter() - started
        stop.set()
        await task
        await consumer.stop()
    consume_rate = consumed / consume_s
    land_rate = events / land_s
    return {
        "events": events,
        "produce_events_per_s": round(produced.rate),
        "consume_only_events_per_s": round(consume_rate),
        "bronze_landed_events_per_s": round(land_rate),
        "ratio_bronze_to_consume_only": round(land_rate / consume_rate, 3),
        "target_ratio": 0.7,
    }


def main(events: int = 1_000_000) -> None:
    report("bronze", "bronze_sink benchmark", asyncio.run(_run(events)))
