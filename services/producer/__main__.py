"""producer: sends a synthetic stream (with a few % of injected dirty records) to `<dataset>.raw`
for every configured dataset, at LAB_PRODUCER_RATE events/s each, until stopped; on SIGTERM it
flushes what is in flight and logs a summary (sent, failed, rate). Any dataset with a contract in
LAB_CONTRACTS_DIR works: orders and sensors have realistic hand-written generators, any other
dataset gets the generic one drawn from its contract."""

from __future__ import annotations

import asyncio
import secrets

import structlog
from pydantic import Field

from archlab.core.service import run_service
from archlab.core.settings import Settings
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import wait_for_kafka

log = structlog.get_logger("producer")


class ProducerSettings(Settings):
    producer_rate: float = Field(200.0, ge=0, description="Events per second per dataset (0 = as fast as possible)")
    producer_seed: int | None = Field(
        None, ge=0, description="Seed of the synthetic stream: the same seed replays the same events. Unset, each "
                                "start draws one (and logs it), so a restarted producer sends new events rather "
                                "than the ones the pipeline already de-duplicated")
    producer_count: int = Field(0, ge=0, description="Events per dataset before stopping (0 = until stopped)")


async def main(settings: ProducerSettings, stop: asyncio.Event) -> None:
    seed = settings.producer_seed if settings.producer_seed is not None else secrets.randbelow(2**31)
    log.info("stream seed", seed=seed, replay_with=f"LAB_PRODUCER_SEED={seed}")
    summaries = await asyncio.gather(
        *(
            produce_synthetic(
                settings, dataset, count=settings.producer_count, rate=settings.producer_rate,
                seed=seed + index, stop=stop,
            )
            for index, dataset in enumerate(settings.datasets)
        )
    )
    for summary in summaries:
        log.info("summary", topic=summary.topic, sent=summary.sent, failed=summary.failed, rate=round(summary.rate))


if __name__ == "__main__":
    run_service("producer", __doc__ or "", main, ProducerSettings, wait_for=wait_for_kafka)
