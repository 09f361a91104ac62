"""silver_refiner: consumes `<dataset>.raw` of every dataset, refines each batch by its contract
(types, rules, derived fields, enrichment), de-duplicates, and writes valid records to
`<dataset>.silver` and invalid ones, with every reason, to `<dataset>.quarantine` in one Kafka
transaction per batch; it also lands silver, quarantine and the `dq` counts on the lake."""

from __future__ import annotations

import asyncio
import socket

from pydantic import Field

from archlab.contract import load_contracts
from archlab.kafka import make_consumer, make_producer
from archlab.lake import Lake
from archlab.landing import BatchEncoder, LakeSink, RollPolicy
from archlab.service import run_service, run_together
from archlab.settings import Settings
from archlab.silver import SilverRefiner
from archlab.silver_lake import DqEncoder, QuarantineEncoder, SilverEncoder


class SilverSettings(Settings):
    silver_group: str = Field("silver_refiner", description="Consumer group of the refiners (raw topics)")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable id of this instance; its transactional id fences a crashed predecessor",
    )
    refine_batch: int = Field(20_000, ge=1, description="Most raw records refined in one transaction")


async def _land(settings: SilverSettings, encoder: BatchEncoder, suffix: str, stop: asyncio.Event) -> None:
    group = f"{settings.silver_group}-{encoder.layer}-lake"
    consumer = make_consumer(settings, group_id=group)
    sink = LakeSink(consumer, Lake.from_settings(settings), encoder, group_id=group,
                    policy=RollPolicy(settings.flush_records, settings.flush_bytes, settings.flush_interval_s))
    consumer.subscribe([f"{dataset}.{suffix}" for dataset in settings.datasets], listener=sink.listener)
    await consumer.start()
    try:
        await sink.run(stop)
    finally:
        await consumer.stop()


async def _refine(settings: SilverSettings, contracts: dict, stop: asyncio.Event) -> None:
    producer = make_producer(
        settings, transactional_id=f"{settings.silver_group}-{settings.instance_id}", transaction_timeout_ms=20_000
    )
    consumer = make_consumer(settings, group_id=settings.silver_group)
    await producer.start()  # fences a dead predecessor with the same id, aborting its open transaction
    refiner = SilverRefiner(settings, contracts, consumer, producer, group_id=settings.silver_group,
                            max_batch=settings.refine_batch)
    consumer.subscribe([f"{dataset}.raw" for dataset in settings.datasets], listener=refiner.listener)
    await consumer.start()
    try:
        await refiner.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()


async def main(settings: SilverSettings, stop: asyncio.Event) -> None:
    contracts = load_contracts(settings.contracts_dir, settings.datasets)
    await run_together(
        stop,
        _refine(settings, contracts, stop),
        _land(settings, SilverEncoder(contracts), "silver", stop),
        _land(settings, QuarantineEncoder(), "quarantine", stop),
        _land(settings, DqEncoder(), "dq", stop),
    )

if __name__ == "__main__":
    run_service("silver_refiner", __doc__ or "", main, SilverSettings)
