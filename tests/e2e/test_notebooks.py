"""Every notebook in notebooks/ runs top to bottom, headless, against the real stack with data in every layer.

Events flow through the real services (bronze_sink, silver_refiner, gold_aggregator as processes) into a
fresh dataset; once bronze, silver, quarantine and each gold table hold it and the stream has caught up,
the services stop and each notebook runs in its own kernel (nbclient) with the throw-away stack's LAB_*
variables and ``LAB_NOTEBOOK_DATASET`` naming that dataset. A cell that raises fails the test. The
executed notebook, outputs included, is kept in test-artifacts/notebooks/ to look at.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from archlab.contract.loading import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.ingest.produce import produce_synthetic
from archlab.lake.tables import Tables
from tests.integration.conftest import ARTIFACTS, ServiceProcess, wait_until
from tests.integration.test_silver import copy_contract

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.timeout(900)]

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
EVENTS = 3_000
# A Spark session's start on 2 busy cores took up to ~50 s, and its first reads as long again.
CELL_TIMEOUT_S = 300
PIPELINE_TIMEOUT_S = 240


@dataclass
class LabData:
    """A dataset whose events went through every layer, and the environment that points a kernel at it."""

    dataset: str
    kernel_env: dict[str, str]


def _rows(tables: Tables, path: str) -> int:
    stats = tables.stats(path)
    return 0 if stats is None else stats.rows


def _layer_rows(tables: Tables, dataset: str, aggregates: list[str]) -> tuple[int, ...]:
    layers = [names.table_path(layer, dataset) for layer in ("bronze", "silver", "quarantine")]
    layers += [names.table_path("gold", dataset, aggregate) for aggregate in aggregates]
    return tuple(_rows(tables, path) for path in layers)


@pytest.fixture(scope="module")
async def lab_data(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LabData]:
    """Events of a fresh orders-like dataset landed in bronze, silver, quarantine and gold; services stopped.

    The events are the orders generator's, sent to the fresh dataset's raw topic."""
    contracts = tmp_path_factory.mktemp("notebook-contracts")
    dataset = await copy_contract(settings, contracts, "orders")
    aggregates = [aggregate.name for aggregate in load_contract(contracts / f"{dataset}.yaml").aggregates]
    # Half an hour of event time: the older minute windows are past their grace and final.
    sent = await produce_synthetic(settings, "orders", count=EVENTS, rate=0, seed=13,
                                   history=timedelta(minutes=30), topic=names.raw_topic(dataset))
    assert sent.sent == EVENTS and sent.failed == 0
    env = {**os.environ, "LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(contracts),
           "LAB_BRONZE_GROUP": f"bronze-{dataset}", "LAB_SILVER_GROUP": f"silver-{dataset}",
           "LAB_GOLD_GROUP": f"gold-{dataset}", "LAB_INSTANCE_ID": "notebooks-test",
           "LAB_FLUSH_INTERVAL_S": "1", "LAB_METRICS_PORT": "0"}
    ARTIFACTS.mkdir(exist_ok=True)
    services = [ServiceProcess(name, env, ARTIFACTS / f"test_notebooks-{name}.log")
                for name in ("bronze_sink", "silver_refiner", "gold_aggregator")]
    tables = Tables.from_settings(settings)
    try:
        previous: list[tuple[int, ...]] = []

        def caught_up() -> bool:
            """Bronze holds every event, every other layer has rows, and no count moved for one poll."""
            counts = _layer_rows(tables, dataset, aggregates)
            previous.append(counts)
            return counts[0] == EVENTS and all(counts) and previous[-2:] == [counts, counts]

        started = time.monotonic()
        wait_until(caught_up, PIPELINE_TIMEOUT_S,
                   f"every layer of {dataset} to fill and settle (rows so far: {previous[-1:]})\n"
                   + "\n".join(service.log_tail(10) for service in services), interval=3)
        print(f"pipeline caught up in {time.monotonic() - started:.0f} s: rows {previous[-1]}")
    finally:
        for service in services:
            service.terminate()
    yield LabData(dataset, {**env, "LAB_NOTEBOOK_DATASET": dataset})


def test_every_notebook_is_found() -> None:
    assert {path.stem for path in NOTEBOOKS} >= {"01_spark_basics", "02_explore_the_lake"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(notebook: Path, lab_data: LabData) -> None:
    book = nbformat.read(notebook, as_version=4)
    client = NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    executed = ARTIFACTS / "notebooks" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        client.execute(env=lab_data.kernel_env)
    except CellExecutionError as exc:
        pytest.fail(f"{notebook.name} failed (executed copy: {executed}):\n{exc}", pytrace=False)
    finally:
        nbformat.write(book, executed)
    print(f"{notebook.name} ran in {time.monotonic() - started:.0f} s")
    code_cells = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count for cell in code_cells), "not every code cell ran"
    images = [output for cell in code_cells for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert images, f"{notebook.name} ends in no chart"
