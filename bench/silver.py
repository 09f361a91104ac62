"""silver_refiner refined events/s against the consume-only rate of the same raw topic, same run.

    .venv/bin/python -m bench silver --events 300000
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.pipeline.silver.stage import SilverRefiner
from archlab.streaming.transactional import run_transactional
from bench.common import against_consume_only, report


async def silver_refiner(settings: Settings, dataset: str, group: str, stop: asyncio.Event) -> None:
    """The service's own transactional stage over the orders contract, renamed to the scratch dataset."""
    orders = load_contract(settings.contracts_dir / "orders.yaml")
    contracts = {dataset: orders.model_copy(update={"dataset": dataset})}

    def refiner(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> SilverRefiner:
        return SilverRefiner(settings, contracts, consumer, producer, group_id=group, max_batch=20_000)

    await run_transactional(settings, refiner, [names.raw_topic(dataset)], group, stop)


def main(events: int = 300_000) -> None:
    report("silver", "silver_refiner benchmark", asyncio.run(against_consume_only(events, "silver", 0.5, silver_refiner)))
