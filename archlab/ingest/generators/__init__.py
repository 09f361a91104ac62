"""Deterministic synthetic event streams with injected dirty data, one generator per dataset.

``make_generator("orders", seed=7, start=datetime(2025, 1, 1, tzinfo=UTC))`` gives an endless
stream of Kafka records; the same arguments always give the same bytes, however the stream is
drawn. Dirty records carry the header ``lab-injected: <kind>`` so tests can check the pipeline
sorted every one of them correctly. Every dataset with a contract has a generator: the shipped
datasets a hand-written, realistic one; any other the generic one, drawn from its contract.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import structlog

from archlab.contract import load_contract
from archlab.core.settings import Settings
from archlab.ingest.generators.base import (
    DIRTY_KINDS,
    INJECTED_HEADER,
    DatasetGenerator,
    DirtyRates,
    EventGenerator,
    GeneratedRecord,
    StreamShape,
)
from archlab.ingest.generators.clock import to_epoch_ms
from archlab.ingest.generators.generic import GenericGenerator
from archlab.ingest.generators.orders import OrdersGenerator
from archlab.ingest.generators.sensors import SensorsGenerator

__all__ = [
    "DIRTY_KINDS",
    "INJECTED_HEADER",
    "DirtyRates",
    "EventGenerator",
    "GeneratedRecord",
    "GenericGenerator",
    "StreamShape",
    "UnknownDatasetError",
    "available_datasets",
    "make_generator",
]

log = structlog.get_logger(__name__)

HAND_WRITTEN: dict[str, type[OrdersGenerator] | type[SensorsGenerator]] = {
    cls.dataset: cls for cls in (OrdersGenerator, SensorsGenerator)
}
DEFAULT_CONTRACTS_DIR: Path = Settings.model_fields["contracts_dir"].default


class UnknownDatasetError(KeyError):
    """No contract describes the requested dataset."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def available_datasets(contracts_dir: Path = DEFAULT_CONTRACTS_DIR) -> list[str]:
    """Names of the datasets that have a generator: every one with a contract in ``contracts_dir``."""
    return sorted(path.stem for path in contracts_dir.glob("*.yaml"))


def make_generator(
    dataset: str,
    *,
    seed: int,
    start: datetime,
    events_per_second: float = 200.0,
    dirty: DirtyRates | None = None,
    contracts_dir: Path = DEFAULT_CONTRACTS_DIR,
    seasonal: bool = True,
    until: datetime | None = None,
    shape: StreamShape | None = None,
) -> EventGenerator:
    """A generator for ``dataset`` whose virtual clock starts at ``start`` (timezone-aware).

    ``dirty`` defaults to ``DirtyRates()`` (about 4% dirty); pass ``DirtyRates.clean()`` for none.
    ``seasonal=False`` keeps arrivals at the mean rate (a live stream paced at that rate; see
    ``DatasetGenerator.at_constant_rate``). With ``until``, ``events_per_second`` is the mean rate from
    ``start`` to ``until`` whatever the seasonal profile there, and the events end before ``until``
    (a backfill of that span; see ``ArrivalClock.average_over``).
    ``shape`` spreads events out of time order and over more groups (``StreamShape``); only the
    orders generator has a catalogue to scale, so another dataset refuses a ``cardinality`` other than 1.
    The contract is read from ``<contracts_dir>/<dataset>.yaml`` (pass ``settings.contracts_dir``).
    A hand-written generator is used while the contract lists exactly the fields it emits; a
    contract changed since (a field added, say) gets the generic generator, with a warning.
    """
    path = contracts_dir / f"{dataset}.yaml"
    if not path.is_file():
        raise UnknownDatasetError(
            f"no contract for dataset {dataset!r} in {contracts_dir}; "
            f"available: {', '.join(available_datasets(contracts_dir))}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    contract = load_contract(path)
    start_ms = to_epoch_ms(start)
    rates = dirty if dirty is not None else DirtyRates()
    hand_written = HAND_WRITTEN.get(dataset)
    if hand_written is not None and set(hand_written.fields) != set(contract.fields):
        log.warning("the contract no longer fits the hand-written generator; using the generic one",
                    dataset=dataset, contract=str(path))
        hand_written = None
    if shape is not None and shape.cardinality != 1 and hand_written is not OrdersGenerator:
        raise ValueError(f"cardinality scales the orders catalogue only; {dataset!r} has none to scale")
    generator: DatasetGenerator
    if hand_written is OrdersGenerator:
        generator = OrdersGenerator(contract, seed, start_ms, events_per_second, rates, shape)
    elif hand_written is not None:
        generator = hand_written(contract, seed, start_ms, events_per_second, rates)
    else:
        generator = GenericGenerator(contract, contracts_dir, seed, start_ms, events_per_second, rates)
    if shape is not None and shape.out_of_order_ms:
        generator.shape_as(shape)
    if not seasonal:
        generator.at_constant_rate()
    if until is not None:
        generator.average_until(to_epoch_ms(until))
    return generator
