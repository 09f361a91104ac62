"""bronze_sink landed events/s against the consume-only rate of the same topic, same run.

    .venv/bin/python -m bench bronze --events 1000000
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import make_consumer
from archlab.lake.store import Lake
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import LakeSink, RollPolicy
from bench.common import against_consume_only, report


@asynccontextmanager
async def bronze_sink(settings: Settings, dataset: str, group: str) -> AsyncIterator[Callable[[asyncio.Event], Awaitable[None]]]:
    consumer = make_consumer(settings, group_id=group)
    sink = LakeSink(consumer, Lake.from_settings(settings), BronzeEncoder(), group_id=group,
                    policy=RollPolicy(settings.flush_records, settings.flush_bytes, 1.0))
    consumer.subscribe([names.raw_topic(dataset)], listener=sink.listener)
    await consumer.start()
    try:
        yield sink.run
    finally:
        await consumer.stop()


def main(events: int = 1_000_000) -> None:
    report("bronze", "bronze_sink benchmark", asyncio.run(against_consume_only(events, "bronze", 0.7, bronze_sink)))
