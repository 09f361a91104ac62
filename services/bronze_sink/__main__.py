"""bronze_sink: consumes `<dataset>.raw` of every dataset in one group and lands each record,
value bytes untouched, as zstd Parquet under bronze/<dataset>/dt=/hour=, exactly once."""

from __future__ import annotations

import asyncio

from pydantic import Field

from archlab.core import names
from archlab.core.service import run_service
from archlab.core.settings import Settings
from archlab.kafka.clients import wait_for_kafka
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import land


class BronzeSettings(Settings):
    bronze_group: str = Field("bronze_sink", description="Consumer group of the bronze sinks")


async def main(settings: BronzeSettings, stop: asyncio.Event) -> None:
    topics = [names.raw_topic(dataset) for dataset in settings.datasets]
    await land(settings, BronzeEncoder(), topics, settings.bronze_group, stop)


if __name__ == "__main__":
    run_service("bronze_sink", __doc__ or "", main, BronzeSettings, wait_for=wait_for_kafka)
