"""A dataset added by contract alone comes alive: the ``producer`` service sends a generic stream for
it (no hand-written generator exists), its events reach silver (enriched) and gold, its injected
dirty records reach quarantine, and the producer runs on without ever exiting.

The contract is ``tests/fixtures/contracts/parcels.yaml`` under a fresh name, in a temporary
``LAB_CONTRACTS_DIR`` that holds nothing else but its reference table.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import orjson
import pytest

from archlab.core.settings import Settings
from archlab.kafka.topics import ensure_topics
from tests.integration.conftest import eventually, read_all
from tests.integration.conftest import start_service as start_service  # noqa: PLC0414 - a fixture, used by name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contracts"


@pytest.fixture
async def contract_only(settings: Settings, tmp_path: Path) -> tuple[str, Path]:
    """A fresh dataset name described by a copy of the parcels contract, with its topics."""
    name = f"p{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "contracts"
    shutil.copytree(FIXTURES / "reference", folder / "reference")
    text = (FIXTURES / "parcels.yaml").read_text().replace("dataset: parcels", f"dataset: {name}", 1)
    (folder / f"{name}.yaml").write_text(text)
    await ensure_topics(settings, [name])
    return name, folder


async def test_a_contract_only_dataset_flows_from_the_producer_to_gold(
    settings: Settings, contract_only: tuple[str, Path], start_service
) -> None:
    name, folder = contract_only
    env = {"LAB_DATASETS": name, "LAB_CONTRACTS_DIR": str(folder), "LAB_SILVER_GROUP": f"silver-{name}",
           "LAB_GOLD_GROUP": f"gold-{name}", "LAB_INSTANCE_ID": "test", "LAB_FLUSH_INTERVAL_S": "0.5",
           "LAB_PRODUCER_RATE": "200"}
    producer = start_service("producer", **env)
    refiner = start_service("silver_refiner", **env)
    gold = start_service("gold_aggregator", **env)
    layers: dict[str, list] = {}

    async def arrived(layer: str) -> bool:
        assert producer.alive(), f"the producer exited:\n{producer.log_tail()}"
        layers[layer] = await read_all(settings, f"{name}.{layer}")
        return len(layers[layer]) > 0

    await eventually(lambda: arrived("silver"), 120, f"{name}.silver")
    await eventually(lambda: arrived("gold"), 120, lambda: f"{name}.gold\n{gold.log_tail()}")
    await eventually(lambda: arrived("quarantine"), 60, f"{name}.quarantine")

    rows = [orjson.loads(record.value) for record in layers["silver"]]
    assert all(row["depot_ref_city"] is not None for row in rows)  # the generated depots are in the reference
    windows = [orjson.loads(record.value) for record in layers["gold"]]
    assert {w["aggregate"] for w in windows} == {"by_status_1m"} and sum(w["scans"] for w in windows) > 0
    reasons = {reason["check"] for record in layers["quarantine"] for reason in orjson.loads(record.value)["reasons"]}
    assert reasons  # injected dirty records were refused for a reason

    assert producer.alive(), producer.log_tail()  # started once, never exited: no restart
    assert producer.terminate() == 0, producer.log_tail()
    assert refiner.terminate() == 0 and gold.terminate() == 0, gold.log_tail()
