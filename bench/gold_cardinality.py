"""gold_aggregator at high cardinality against the low-cardinality orders case, same run.

    .venv/bin/python -m bench gold_cardinality --events 100000
    .venv/bin/python -m bench.gold_cardinality --events 100000 --rounds 2

The high case: hourly windows by product and country with a one-day grace, over orders whose
event times are spread up to 22 hours out of order and whose catalogue is three times larger, so that
a window holds a handful of events. The low case: the shipped orders contract over the plain
stream. Rounds alternate low and high (A/B) on one throw-away stack; silver is filled first (not
timed), then both gold stages run until the aggregating one has committed everything. Reported:
events/s of each case, their ratio (target: high at least half of low), events per window, and
rejoins of the aggregator's consumer group (one member: every rejoin is an eviction; target 0).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from statistics import median
from typing import Annotated

import typer

from archlab.contract import Contract, load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import StreamShape
from archlab.kafka.clients import read_to_end, topic_partitions
from bench.common import copy_contract, report, throwaway_stack
from bench.gold import fill_silver, run_gold_stages

HOUR_MS = 3_600_000
HIGH_SHAPE = StreamShape(out_of_order_ms=22 * HOUR_MS, cardinality=3)
HIGH_AGGREGATES = """aggregates:
  - name: by_product_country_1h
    description: Sales per hour, product and country (a window per few events)
    window: 1h
    grace: 1d
    group_by: [product_id, country]
    measures:
      - {name: orders, fn: count_distinct, field: order_id}
      - {name: units, fn: sum, field: quantity}
      - {name: revenue_eur, fn: sum, field: amount_eur, unit: EUR}
      - {name: customers, fn: count_distinct, field: customer_id}
"""


def with_high_cardinality_aggregates(contract_text: str) -> str:
    """An orders contract's YAML with its aggregates replaced by one hourly aggregate by product and
    country with a one-day grace."""
    return contract_text[: contract_text.index("\naggregates:") + 1] + HIGH_AGGREGATES


def high_cardinality_contract(folder: Path, dataset: str) -> Path:
    """The orders contract as ``dataset`` in ``folder`` (with its reference tables), with the
    high-cardinality aggregate."""
    copy_contract(folder, dataset)
    path = folder / f"{dataset}.yaml"
    path.write_text(with_high_cardinality_aggregates(path.read_text()))
    return path


async def windows_emitted(settings: Settings, dataset: str) -> int:
    """Distinct windows (aggregate, start, group) among the gold records of a dataset."""
    keys: set[bytes] = set()
    async for records in read_to_end(settings, await topic_partitions(settings, names.gold_topic(dataset))):
        keys.update(r.key for r in records)
    return len(keys)


async def one_case(settings: Settings, folder: Path, events: int, high: bool) -> dict[str, float]:
    dataset = await fill_silver(settings, events, HIGH_SHAPE if high else None, seed=5)
    contract: Contract
    if high:
        contract = load_contract(high_cardinality_contract(folder, dataset))
    else:
        contract = load_contract(settings.contracts_dir / "orders.yaml").model_copy(update={"dataset": dataset})
    run = await run_gold_stages(settings, contract)
    windows = await windows_emitted(settings, dataset)
    if run.failures:
        raise RuntimeError(f"a gold stage failed: {run.failures}")
    return {"events_per_s": events / run.aggregated_s, "rejoins": run.rejoins,
            "events_per_window": events / max(windows, 1) * len(contract.aggregates)}


async def measure(events: int, rounds: int) -> dict[str, object]:
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with throwaway_stack("goldcard") as (_, settings), tempfile.TemporaryDirectory(prefix="lab-goldcard-") as folder:
        for _ in range(rounds):
            for high in (False, True):
                results[high].append(await one_case(settings, Path(folder), events, high))
    low = median(r["events_per_s"] for r in results[False])
    high = median(r["events_per_s"] for r in results[True])
    return {
        "events_per_case": events,
        "rounds": rounds,
        "low_cardinality_gold_events_per_s": round(low),
        "high_cardinality_gold_events_per_s": round(high),
        "ratio_high_to_low": round(high / low, 3),
        "target_ratio": 0.5,
        "high_events_per_window": round(median(r["events_per_window"] for r in results[True]), 2),
        "low_events_per_window": round(median(r["events_per_window"] for r in results[False]), 2),
        "aggregator_rejoins_high": int(sum(r["rejoins"] for r in results[True])),
        "aggregator_rejoins_low": int(sum(r["rejoins"] for r in results[False])),
        "target_rejoins": 0,
        "high_rates_per_round": [round(r["events_per_s"]) for r in results[True]],
        "low_rates_per_round": [round(r["events_per_s"]) for r in results[False]],
    }


def main(events: int = 100_000, rounds: int = 1) -> None:
    report("gold_cardinality", "gold_aggregator at high cardinality against low, same run",
           asyncio.run(measure(events, rounds)))


def cli(events: Annotated[int, typer.Option(help="events per case")] = 100_000,
        rounds: Annotated[int, typer.Option(min=1, help="low/high pairs, alternating")] = 1) -> None:
    main(events, rounds)


if __name__ == "__main__":
    typer.run(cli)
