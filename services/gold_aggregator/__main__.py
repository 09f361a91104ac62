"""gold_aggregator: aggregates `<dataset>.silver` into the contract's event-time windows.

Two transactional stages (see archlab/gold.py): silver re-keyed by time bucket into
`<dataset>.gold-shuffle`, then windows per shuffle partition emitted to the compacted
`<dataset>.gold` topic with their state deltas in `<dataset>.gold-state`. It also lands gold on the
lake (`gold/<dataset>/<aggregate>/dt=…/hour=…`) and compacts closed hours into one file each."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from pydantic import Field

from archlab.compaction import compact_forever
from archlab.contract import load_contracts
from archlab.gold import Aggregator, GoldEncoder, Shuffler, shuffle_topic, with_aggregates
from archlab.kafka import make_consumer, make_producer
from archlab.lake import Lake
from archlab.landing import LakeSink, RollPolicy
from archlab.service import run_service, run_together
from archlab.settings import PROJECT_ROOT, Settings
from archlab.transactional import TransactionalProcessor


class GoldSettings(Settings):
    gold_group: str = Field("gold_aggregator", description="Consumer group prefix of the gold stages")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Stable id of this instance; its transactional ids fence a crashed predecessor",
    )
    gold_batch: int = Field(20_000, ge=1, description="Most records aggregated in one transaction")
    compaction_interval_s: float = Field(60.0, gt=0, description="Seconds between two compaction passes")
    state_dir: Path = Field(PROJECT_ROOT / ".stack" / "native" / "state" / "gold_aggregator",
                            description="Folder of the local window checkpoints (RocksDB), one per instance")


async def _stage(settings: GoldSettings, processor_type: type, group: str, topics: list[str], contracts: dict,
                 stop: asyncio.Event) -> None:
    producer = make_producer(settings, transactional_id=f"{group}-{settings.instance_id}",
                             transaction_timeout_ms=20_000)
    consumer = make_consumer(settings, group_id=group)
    await producer.start()  # fences a dead predecessor with the same id, aborting its open transaction
    extra = ({"settings": settings, "state_dir": settings.state_dir / settings.instance_id}
             if processor_type is Aggregator else {})
    processor: TransactionalProcessor = processor_type(
        **extra, contracts=contracts, consumer=consumer, producer=producer, group_id=group,
        max_batch=settings.gold_batch,
    )
    consumer.subscribe(topics, listener=processor.listener)
    await consumer.start()
    try:
        await processor.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()


async def _land(settings: GoldSettings, contracts: dict, stop: asyncio.Event) -> None:
    group = f"{settings.gold_group}-gold-lake"
    consumer = make_consumer(settings, group_id=group)
    sink = LakeSink(consumer, Lake.from_settings(settings), GoldEncoder(contracts), group_id=group,
                    policy=RollPolicy(settings.flush_records, settings.flush_bytes, settings.flush_interval_s))
    consumer.subscribe([f"{dataset}.gold" for dataset in contracts], listener=sink.listener)
    await consumer.start()
    try:
        await sink.run(stop)
    finally:
        await consumer.stop()


async def main(settings: GoldSettings, stop: asyncio.Event) -> None:
    contracts = with_aggregates(load_contracts(settings.contracts_dir, settings.datasets))
    if not contracts:
        raise SystemExit("gold_aggregator: no configured dataset has aggregates in its contract")
    group = settings.gold_group
    await run_together(
        stop,
        _stage(settings, Shuffler, f"{group}-shuffle", [f"{d}.silver" for d in contracts], contracts, stop),
        _stage(settings, Aggregator, group, [shuffle_topic(d) for d in contracts], contracts, stop),
        _land(settings, contracts, stop),
        compact_forever(Lake.from_settings(settings), contracts, settings.compaction_interval_s, stop),
    )


if __name__ == "__main__":
    run_service("gold_aggregator", __doc__ or "", main, GoldSettings)
