"""gold_aggregator aggregated events/s against the consume-only rate of the same silver topic, same run.

    .venv/bin/python -m bench gold --events 300000

Silver is filled first by the silver refiner (not timed); then both gold stages run until the
aggregating stage has committed everything the shuffle stage wrote.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY

from archlab.contract import Contract, load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import StreamShape
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.pipeline.gold.stages import Aggregator, Shuffler
from archlab.streaming.runtime import GROUP_JOINS_METRIC
from archlab.streaming.transactional import run_transactional
from bench.common import consume_only_rate, fresh_dataset, report, throwaway_stack
from bench.silver import silver_refiner


async def fill_silver(settings: Settings, events: int, shape: StreamShape | None = None, seed: int = 1) -> str:
    """A fresh dataset whose silver topic holds ``events`` refined orders (shaped by ``shape``)."""
    dataset = await fresh_dataset(settings)
    raw, group = names.raw_topic(dataset), names.group("silver", dataset)
    await produce_synthetic(settings, "orders", count=events, rate=0, seed=seed, topic=raw, shape=shape)
    refined = asyncio.Event()
    refining = asyncio.create_task(silver_refiner(settings, dataset, group, refined))
    await wait_caught_up(settings, group, [raw], timeout_s=1800)
    refined.set()
    await refining
    return dataset


@dataclass(frozen=True)
class GoldRun:
    """Both gold stages over one dataset's silver topic, timed from their start."""

    shuffled_s: float  # the shuffle stage caught up
    aggregated_s: float  # the aggregating stage caught up
    rejoins: int  # joins of the aggregating stage's group after its first: evictions (one member)
    failures: list[str]  # stages that ended with an error


async def run_gold_stages(settings: Settings, contract: Contract, max_batch: int = 20_000) -> GoldRun:
    """Run the shuffle and aggregating stages in this process until the second has committed
    everything the first wrote; what the consumer group saw meanwhile."""
    dataset = contract.dataset
    contracts = {dataset: contract}
    shuffle_group, gold_group = names.group("shuffle", dataset), names.group("gold", dataset)
    silver, shuffle = names.silver_topic(dataset), names.gold_shuffle_topic(dataset)
    stop = asyncio.Event()
    state = Path(tempfile.mkdtemp(prefix="lab-bench-gold-state-"))

    def shuffler(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> Shuffler:
        return Shuffler(contracts, consumer, producer, group_id=shuffle_group, max_batch=max_batch)

    def aggregator(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> Aggregator:
        return Aggregator(settings, contracts, consumer, producer, group_id=gold_group, max_batch=max_batch,
                          state_dir=state)

    started = time.perf_counter()
    stages = [
        asyncio.create_task(run_transactional(settings, shuffler, [silver], shuffle_group, stop)),
        asyncio.create_task(run_transactional(settings, aggregator, [shuffle], gold_group, stop)),
    ]
    await wait_caught_up(settings, shuffle_group, [silver], poll_s=0.05, timeout_s=3600)
    shuffled_s = time.perf_counter() - started
    await wait_caught_up(settings, gold_group, [shuffle], poll_s=0.05, timeout_s=3600)
    aggregated_s = time.perf_counter() - started
    stop.set()
    ended = await asyncio.gather(*stages, return_exceptions=True)
    joins = REGISTRY.get_sample_value(f"{GROUP_JOINS_METRIC}_total", {"group": gold_group}) or 0
    return GoldRun(shuffled_s, aggregated_s, int(joins) - 1, [repr(e) for e in ended if isinstance(e, BaseException)])


async def measure(events: int) -> dict[str, object]:
    with throwaway_stack() as (_, settings):
        dataset = await fill_silver(settings, events)
        silver_records, consume_s = await consume_only_rate(settings, names.silver_topic(dataset))
        contract = load_contract(settings.contracts_dir / "orders.yaml").model_copy(update={"dataset": dataset})
        run = await run_gold_stages(settings, contract)
    consume_rate = silver_records / consume_s
    rate = silver_records / run.aggregated_s
    return {
        "events_sent": events,
        "silver_events": silver_records,
        "consume_only_silver_events_per_s": round(consume_rate),
        "shuffle_stage_done_s": round(run.shuffled_s, 2),
        "gold_events_per_s": round(rate),
        "ratio_gold_to_consume_only": round(rate / consume_rate, 3),
        "gold_group_rejoins": run.rejoins,
    }


def main(events: int = 300_000) -> None:
    report("gold", "gold_aggregator benchmark", asyncio.run(measure(events)))
