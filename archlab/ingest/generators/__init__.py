"""Deterministic synthetic event streams with injected dirty data, one generator per dataset.

``make_generator("orders", seed=7, start=datetime(2025, 1, 1, tzinfo=UTC))`` gives an endless
stream of Kafka records; the same arguments always give the same bytes, however the stream is
drawn. Dirty records carry the header ``lab-injected: <kind>`` so tests can check the pipeline
sorted every one of them correctly.
"""

from __future__ import annotations

from datetime import datetime

from archlab.contract import load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators.base import (
    DIRTY_KINDS,
    INJECTED_HEADER,
    DirtyRates,
    EventGenerator,
    GeneratedRecord,
)
from archlab.ingest.generators.clock import to_epoch_ms
from archlab.ingest.generators.orders import OrdersGenerator
from archlab.ingest.generators.sensors import SensorsGenerator

__all__ = [
    "DIRTY_KINDS",
    "INJECTED_HEADER",
    "DirtyRates",
    "EventGenerator",
    "GeneratedRecord",
    "UnknownDatasetError",
    "available_datasets",
    "make_generator",
]

_GENERATORS: dict[str, type[OrdersGenerator] | type[SensorsGenerator]] = {
    cls.dataset: cls for cls in (OrdersGenerator, SensorsGenerator)
}
CONTRACTS_DIR = PROJECT_ROOT / "contracts"


class UnknownDatasetError(KeyError):
    """No generator exists for the requested dataset."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def available_datasets() -> list[str]:
    """Names of the datasets that have a generator."""
    return sorted(_GENERATORS)


def make_generator(
    dataset: str,
    *,
    seed: int,
    start: datetime,
    events_per_second: float = 200.0,
    dirty: DirtyRates | None = None,
) -> EventGenerator:
    """A generator for ``dataset`` whose virtual clock starts at ``start`` (timezone-aware).

    ``dirty`` defaults to ``DirtyRates()`` (about 4% dirty); pass ``DirtyRates.clean()`` for none.
    The dataset's contract is read from ``contracts/<dataset>.yaml`` for its key, event time and
    required fields, and must list exactly the fields the generator emits.
    """
    if dataset not in _GENERATORS:
        raise UnknownDatasetError(
            f"no generator for dataset {dataset!r}; available: {', '.join(available_datasets())}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    contract = load_contract(CONTRACTS_DIR / f"{dataset}.yaml")
    return _GENERATORS[dataset](
        contract, seed, to_epoch_ms(start), events_per_second, dirty if dirty is not None else DirtyRates()
    )
