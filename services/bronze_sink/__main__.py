"""bronze_sink: consumes `<dataset>.raw` of every dataset in one group and lands each record,
value bytes untouched, in the Delta table bronze/<dataset>, exactly once; it also maintains that
table (compaction, checkpoints, vacuum: archlab/lake/maintenance.py)."""

from __future__ import annotations

import asyncio

from pydantic import Field

from archlab.core import names
from archlab.core.service import run_service, run_together
from archlab.core.settings import Settings
from archlab.kafka.clients import wait_for_kafka
from archlab.lake.maintenance import maintain_forever
from archlab.lake.tables import Tables
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import land, prepare_tables


class BronzeSettings(Settings):
    bronze_group: str = Field("bronze_sink", description="Consumer group of the bronze sinks")


async def main(settings: BronzeSettings, stop: asyncio.Event) -> None:
    topics = [names.raw_topic(dataset) for dataset in settings.datasets]
    encoder = BronzeEncoder()
    targets = [t for d in settings.datasets for t in encoder.targets(d)]
    if not await prepare_tables(settings, targets, stop):
        return
    await run_together(
        stop,
        land(settings, encoder, topics, settings.bronze_group, stop),
        maintain_forever(Tables.from_settings(settings), [t.path for t in targets], settings, stop),
    )


if __name__ == "__main__":
    run_service("bronze_sink", __doc__ or "", main, BronzeSettings, wait_for=wait_for_kafka)
