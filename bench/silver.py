"""silver_refiner refined events/s against the consume-only rate of the same raw topic, same run.

    .venv/bin/python -m bench silver --events 300000
"""

from __future__ import annotations

import asyncio
import time

from archlab.contract import load_contracts
from archlab.kafka import make_consumer, make_producer
from archlab.produce import produce_synthetic
from archlab.silver import SilverRefiner
from bench.common import consume_only_rate, fresh_dataset, report, throwaway_stack, wait_committed


async def _run(events: int) -> dict[str, object]:
    with throwaway_stack() as settings:
        dataset = await fresh_dataset(settings)
        contract_dir = settings.contracts_dir
        contracts = {dataset: load_contracts(contract_dir, ["orders"])["orders"].model_copy(update={"dataset": dataset})}
        topic = f"{dataset}.raw"
        produced = await produce_synthetic(settings, "orders", count=events, rate=0, seed=1, topic=topic)
        consumed, consume_s = await consume_only_rate(settings, topic)

        group = f"silver-{dataset}"
        producer = make_producer(settings, transactional_id=f"{group}-bench")
        consumer = make_consumer(settings, group_id=group)
        await producer.start()
        refiner = SilverRefiner(settings, contracts, consumer, producer, group_id=group, max_batch=20_000)
        consumer.subscribe([topic], listener=refiner.listener)
        await consumer.start()
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(refiner.run(stop))
        await wait_committed(settings, group, topic, poll_s=0.05)
        refine_s = time.perf_counter() - started
        stop.set()
        await task
        await consumer.stop()
        await producer.stop()
    consume_rate = consumed / consume_s
    refine_rate = events / refine_s
    return {
        "events": events,
        "produce_events_per_s": round(produced.rate),
        "consume_only_events_per_s": round(consume_rate),
        "refined_events_per_s": round(refine_rate),
        "ratio_refined_to_consume_only": round(refine_rate / consume_rate, 3),
        "target_ratio": 0.5,
    }


def main(events: int = 300_000) -> None:
    report("silver", "silver_refiner benchmark", asyncio.run(_run(events)))
