"""silver_refiner refined events/s against the consume-only rate of the same raw topic, same run.

    .venv/bin/python -m bench silver --events 300000
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import make_consumer, make_producer
from archlab.pipeline.silver.stage import SilverRefiner
from bench.common import against_consume_only, report


@asynccontextmanager
async def silver_refiner(
    settings: Settings, dataset: str, group: str
) -> AsyncIterator[Callable[[asyncio.Event], Awaitable[None]]]:
    orders = load_contract(settings.contracts_dir / "orders.yaml")
    contracts = {dataset: orders.model_copy(update={"dataset": dataset})}
    producer = make_producer(settings, transactional_id=names.group(group, "bench"))
    consumer = make_consumer(settings, group_id=group)
    await producer.start()
    refiner = SilverRefiner(settings, contracts, consumer, producer, group_id=group, max_batch=20_000)
    consumer.subscribe([names.raw_topic(dataset)], listener=refiner.listener)
    await consumer.start()
    try:
        yield refiner.run
    finally:
        await consumer.stop()
        await producer.stop()


def main(events: int = 300_000) -> None:
    report("silver", "silver_refiner benchmark", asyncio.run(against_consume_only(events, "silver", 0.5, silver_refiner)))
