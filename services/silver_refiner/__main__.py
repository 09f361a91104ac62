"""silver_refiner: consumes `<dataset>.raw` of every dataset, refines each batch by its contract
(types, rules, derived fields, enrichment), de-duplicates, and writes valid records to
`<dataset>.silver` and invalid ones, with every reason, to `<dataset>.quarantine` in one Kafka
transaction per batch; it also lands silver, quarantine and the `dq` counts in their Delta tables
and maintains those tables (compaction, checkpoints, vacuum: archlab/lake/maintenance.py)."""

from __future__ import annotations

import asyncio

from pydantic import Field

from archlab.contract import load_contracts
from archlab.core import names
from archlab.core.names import TopicKind
from archlab.core.service import run_service, run_together
from archlab.core.settings import Settings
from archlab.kafka.clients import wait_for_kafka
from archlab.lake.maintenance import maintain_forever
from archlab.lake.tables import Tables
from archlab.pipeline.silver.stage import SilverRefiner
from archlab.pipeline.silver.tables import DqEncoder, QuarantineEncoder, SilverEncoder
from archlab.streaming.lake_sink import land, prepare_tables
from archlab.streaming.transactional import run_transactional


class SilverSettings(Settings):
    silver_group: str = Field("silver_refiner", description="Consumer group of the refiners (raw topics)")
    refine_batch: int = Field(20_000, ge=1, description="Most raw records refined in one transaction")


async def main(settings: SilverSettings, stop: asyncio.Event) -> None:
    contracts = load_contracts(settings.contracts_dir, settings.datasets)
    group = settings.silver_group

    def refiner(consumer, producer) -> SilverRefiner:  # type: ignore[no-untyped-def]
        return SilverRefiner(settings, contracts, consumer, producer, group_id=group, max_batch=settings.refine_batch)

    def topics(kind: TopicKind) -> list[str]:
        return [names.topic(dataset, kind) for dataset in settings.datasets]

    silver, quarantine, dq = SilverEncoder(contracts), QuarantineEncoder(), DqEncoder()
    targets = [t for e in (silver, quarantine, dq) for d in settings.datasets for t in e.targets(d)]
    if not await prepare_tables(settings, targets, stop):  # a contract its tables cannot take stops here
        return
    await run_together(
        stop,
        run_transactional(settings, refiner, topics(TopicKind.RAW), group, stop),
        land(settings, silver, topics(TopicKind.SILVER), names.group(group, "silver", "lake"), stop),
        land(settings, quarantine, topics(TopicKind.QUARANTINE), names.group(group, "quarantine", "lake"), stop),
        land(settings, dq, topics(TopicKind.DQ), names.group(group, "dq", "lake"), stop),
        maintain_forever(Tables.from_settings(settings), [t.path for t in targets], settings, stop),
    )


if __name__ == "__main__":
    run_service("silver_refiner", __doc__ or "", main, SilverSettings, wait_for=wait_for_kafka)
