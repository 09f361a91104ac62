"""bronze_sink: consumes `<dataset>.raw` of every dataset in one group and lands each record,
value bytes untouched, as zstd Parquet under bronze/<dataset>/dt=/hour=, exactly once."""

from __future__ import annotations

import asyncio

from pydantic import Field

from archlab.bronze import BronzeEncoder
from archlab.kafka import make_consumer
from archlab.lake import Lake
from archlab.landing import LakeSink, RollPolicy
from archlab.service import run_service
from archlab.settings import Settings


class BronzeSettings(Settings):
    bronze_group: str = Field("bronze_sink", description="Consumer group of the bronze sinks")


async def main(settings: BronzeSettings, stop: asyncio.Event) -> None:
    topics = [f"{dataset}.raw" for dataset in settings.datasets]
    consumer = make_consumer(settings, group_id=settings.bronze_group)
    sink = LakeSink(
        consumer,
        Lake.from_settings(settings),
        BronzeEncoder(),
        group_id=settings.bronze_group,
        policy=RollPolicy(settings.flush_records, settings.flush_bytes, settings.flush_interval_s),
    )
    consumer.subscribe(topics, listener=sink.listener)
    await consumer.start()
    try:
        await sink.run(stop)
    finally:
        await consumer.stop()


if __name__ == "__main__":
    run_service("bronze_sink", __doc__ or "", main, BronzeSettings)
