"""bronze_sink landed events/s against the consume-only rate of the same topic, same run.

    .venv/bin/python -m bench bronze --events 1000000
"""

from __future__ import annotations

import asyncio

from archlab.core import names
from archlab.core.settings import Settings
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import land
from bench.common import against_consume_only, report


async def bronze_sink(settings: Settings, dataset: str, group: str, stop: asyncio.Event) -> None:
    """The service's own landing loop; files roll after 1 s so the backlog's tail is not a 5 s wait."""
    quick = settings.model_copy(update={"flush_interval_s": 1.0})
    await land(quick, BronzeEncoder(), [names.raw_topic(dataset)], group, stop)


def main(events: int = 1_000_000) -> None:
    report("bronze", "bronze_sink benchmark", asyncio.run(against_consume_only(events, "bronze", 0.7, bronze_sink)))
