"""gold_aggregator: aggregates `<dataset>.silver` into the contract's event-time windows.

Two transactional stages (see archlab/pipeline/gold/stages.py): silver re-keyed by time bucket into
`<dataset>.gold-shuffle`, then windows per shuffle partition emitted to the compacted
`<dataset>.gold` topic with their state deltas in `<dataset>.gold-state`. It also merges gold into
one current-value Delta table per aggregate (`gold/<dataset>/<aggregate>`, by window date) and
maintains those tables (compaction, checkpoints, vacuum: archlab/lake/maintenance.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from archlab.contract import load_contracts
from archlab.core import names
from archlab.core.service import run_service, run_together
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.kafka.clients import wait_for_kafka
from archlab.lake.maintenance import maintain_forever
from archlab.lake.tables import Tables
from archlab.pipeline.gold.stages import Aggregator, Shuffler, with_aggregates
from archlab.pipeline.gold.tables import GoldEncoder
from archlab.streaming.lake_sink import land, prepare_tables
from archlab.streaming.transactional import run_transactional


class GoldSettings(Settings):
    gold_group: str = Field("gold_aggregator", description="Consumer group prefix of the gold stages")
    gold_batch: int = Field(20_000, ge=1, description="Most records aggregated in one transaction")
    state_dir: Path = Field(PROJECT_ROOT / ".stack" / "native" / "state" / "gold_aggregator",
                            description="Folder of the local window checkpoints (RocksDB), one per instance")


async def main(settings: GoldSettings, stop: asyncio.Event) -> None:
    contracts = with_aggregates(load_contracts(settings.contracts_dir, settings.datasets))
    if not contracts:
        raise SystemExit("gold_aggregator: no configured dataset has aggregates in its contract")
    group = settings.gold_group
    shuffle_group = names.group(group, "shuffle")

    def shuffler(consumer, producer) -> Shuffler:  # type: ignore[no-untyped-def]
        return Shuffler(contracts, consumer, producer, group_id=shuffle_group, max_batch=settings.gold_batch)

    def aggregator(consumer, producer) -> Aggregator:  # type: ignore[no-untyped-def]
        return Aggregator(settings, contracts, consumer, producer, group_id=group, max_batch=settings.gold_batch,
                          state_dir=settings.state_dir / settings.instance_id)

    encoder = GoldEncoder(contracts)
    targets = [t for d in contracts for t in encoder.targets(d)]
    if not await prepare_tables(settings, targets, stop):  # a contract its tables cannot take stops here
        return
    await run_together(
        stop,
        run_transactional(settings, shuffler, [names.silver_topic(d) for d in contracts], shuffle_group, stop),
        run_transactional(settings, aggregator, [names.gold_shuffle_topic(d) for d in contracts], group, stop),
        land(settings, encoder, [names.gold_topic(d) for d in contracts], names.group(group, "gold", "lake"), stop),
        maintain_forever(Tables.from_settings(settings), [t.path for t in targets], settings, stop),
    )


if __name__ == "__main__":
    run_service("gold_aggregator", __doc__ or "", main, GoldSettings, wait_for=wait_for_kafka)
