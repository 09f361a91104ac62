"""The data contract: the only place a dataset is described.

A contract is one YAML file per dataset under ``contracts/``, validated when a service starts.
The package is split by role: :mod:`~archlab.contract.types` (type names and durations),
:mod:`~archlab.contract.model` and :mod:`~archlab.contract.aggregates` (the pydantic models),
:mod:`~archlab.contract.loading` (files to models), :mod:`~archlab.contract.checks` (what DuckDB
checks at load), :mod:`~archlab.contract.references` (reference tables) and
:mod:`~archlab.core.sql` (the DuckDB connection and quoting they share). Other packages import
from here only.
"""

from archlab.contract.aggregates import Aggregate, Measure
from archlab.contract.loading import load_contract, load_contracts
from archlab.contract.model import ENGINE_CHECKS, KAFKA_TIMESTAMP, LINEAGE, Contract, ContractError, FieldSpec
from archlab.contract.objectives import Objectives, RateObjective, VolumeObjective
from archlab.contract.references import load_references
from archlab.contract.types import base_type, decimal_digits, sql_type
from archlab.core.sql import connect, quote

__all__ = [
    "ENGINE_CHECKS",
    "KAFKA_TIMESTAMP",
    "LINEAGE",
    "Aggregate",
    "Contract",
    "ContractError",
    "FieldSpec",
    "Measure",
    "Objectives",
    "RateObjective",
    "VolumeObjective",
    "base_type",
    "connect",
    "decimal_digits",
    "load_contract",
    "load_contracts",
    "load_references",
    "quote",
    "sql_type",
]
