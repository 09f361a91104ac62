"""gold_aggregator at high cardinality (hourly windows by product and country, a window per event or
two) over events hours out of order within a one-day grace: in many small transactions it stays in
its consumer group (one join, never evicted for being busy, never restarted) and gold equals one
DuckDB query over silver. The short form of ``python -m bench gold_cardinality``."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import StreamShape
from archlab.ingest.produce import produce_synthetic
from archlab.lake.tables import Tables
from archlab.testing.verify import gold_topic_differences, wait_gold_equals_truth
from bench.gold_cardinality import HOUR_MS, with_high_cardinality_aggregates
from tests.integration.test_silver import copy_contract

pytestmark = pytest.mark.integration

#: Out of order by up to 16 hours: with the injected late events (up to 6 hours behind) still within
#: the one-day grace, so the batch truth (which knows no lateness) is the expected result.
SHAPE = StreamShape(out_of_order_ms=16 * HOUR_MS, cardinality=5)


async def test_high_cardinality_out_of_order_gold_is_exact_and_never_evicted(
    settings: Settings, tables: Tables, tmp_path: Path, start_service
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    path = folder / f"{dataset}.yaml"
    path.write_text(with_high_cardinality_aggregates(path.read_text()))
    contract = load_contract(path)
    summary = await produce_synthetic(settings, "orders", count=4_000, rate=0, seed=61,
                                      topic=names.raw_topic(dataset), shape=SHAPE)
    assert summary.sent == 4_000
    env = {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(folder), "LAB_SILVER_GROUP": f"silver-{dataset}",
           "LAB_GOLD_GROUP": f"gold-{dataset}", "LAB_INSTANCE_ID": "test", "LAB_FLUSH_INTERVAL_S": "0.5",
           "LAB_GOLD_BATCH": "400"}  # many transactions, each touching hundreds of windows
    refiner = start_service("silver_refiner", **env)
    gold = start_service("gold_aggregator", **env)
    problems = await wait_gold_equals_truth(tables, contract, 240)
    assert problems == [], "\n".join(problems[:20]) + "\n" + gold.log_tail()
    assert await gold_topic_differences(settings, tables, contract) == []
    windows = gold.metric("lab_gold_updates_total", dataset=dataset)
    assert windows > 4_000 / 5, f"{windows} gold updates for 4,000 events: not a window per few events"
    assert gold.metric("lab_group_joins_total", group=f"gold-{dataset}") == 1, "the aggregator rejoined its group"
    assert gold.metric("lab_group_joins_total", group=names.group(f"gold-{dataset}", "shuffle")) == 1
    assert gold.terminate() == 0 and refiner.terminate() == 0, gold.log_tail()
