"""gold_aggregator aggregated events/s against the consume-only rate of the same silver topic, same run.

    .venv/bin/python -m bench gold --events 300000

Silver is filled first by the silver refiner (not timed); then both gold stages run until the
aggregating stage has committed everything the shuffle stage wrote.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from archlab.contract import load_contract
from archlab.core import names
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.pipeline.gold.stages import Aggregator, Shuffler
from archlab.streaming.transactional import run_transactional
from bench.common import consume_only_rate, fresh_dataset, report, throwaway_stack
from bench.silver import silver_refiner


async def measure(events: int) -> dict[str, object]:
    with throwaway_stack() as (_, settings):
        dataset = await fresh_dataset(settings)
        raw, silver, shuffle = names.raw_topic(dataset), names.silver_topic(dataset), names.gold_shuffle_topic(dataset)
        silver_group, shuffle_group, gold_group = (names.group(stage, dataset) for stage in ("silver", "shuffle", "gold"))
        await produce_synthetic(settings, "orders", count=events, rate=0, seed=1, topic=raw)
        refined = asyncio.Event()
        refining = asyncio.create_task(silver_refiner(settings, dataset, silver_group, refined))
        await wait_caught_up(settings, silver_group, [raw])
        refined.set()
        await refining
        silver_records, consume_s = await consume_only_rate(settings, silver)
        contract = load_contract(settings.contracts_dir / "orders.yaml").model_copy(update={"dataset": dataset})
        contracts = {dataset: contract}
        stop = asyncio.Event()
        state = Path(tempfile.mkdtemp(prefix="lab-bench-gold-state-"))
        started = time.perf_counter()
        def shuffler(consumer, producer) -> Shuffler:  # type: ignore[no-untyped-def]
            return Shuffler(contracts, consumer, producer, group_id=shuffle_group, max_batch=20_000)

        def aggregator(consumer, producer) -> Aggregator:  # type: ignore[no-untyped-def]
            return Aggregator(settings, contracts, consumer, producer, group_id=gold_group, max_batch=20_000,
                              state_dir=state)

        stages = [
            asyncio.create_task(run_transactional(settings, shuffler, [silver], shuffle_group, stop)),
            asyncio.create_task(run_transactional(settings, aggregator, [shuffle], gold_group, stop)),
        ]
        await wait_caught_up(settings, shuffle_group, [silver], poll_s=0.05)
        shuffled_s = time.perf_counter() - started
        await wait_caught_up(settings, gold_group, [shuffle], poll_s=0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*stages)
    consume_rate = silver_records / consume_s
    rate = silver_records / elapsed
    return {
        "events_sent": events,
        "silver_events": silver_records,
        "consume_only_silver_events_per_s": round(consume_rate),
        "shuffle_stage_done_s": round(shuffled_s, 2),
        "gold_events_per_s": round(rate),
        "ratio_gold_to_consume_only": round(rate / consume_rate, 3),
    }


def main(events: int = 300_000) -> None:
    report("gold", "gold_aggregator benchmark", asyncio.run(measure(events)))
