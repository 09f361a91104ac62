"""The data contract: the only place a dataset is described.

A contract is one YAML file per dataset under ``contracts/``. It is validated when a service
starts, so a broken contract stops the service with a message naming the file and the problem.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
SIMPLE_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file and the problem."""


class FieldSpec(BaseModel):
    """One field of an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    required: bool = True
    description: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in SIMPLE_TYPES:
            return value
        match = _DECIMAL.match(value)
        if not match:
            allowed = ", ".join([*SIMPLE_TYPES, "decimal(p,s)"])
            raise ValueError(f"unknown type {value!r}; allowed: {allowed}")
        precision, scale = int(match[1]), int(match[2])
        if not 1 <= precision <= 38 or scale > precision:
            raise ValueError(f"decimal({precision},{scale}) needs 1 <= precision <= 38 and scale <= precision")
        return f"decimal({precision},{scale})"

    @property
    def arrow_type(self) -> pa.DataType:
        if self.type in SIMPLE_TYPES:
            return SIMPLE_TYPES[self.type]
        match = _DECIMAL.match(self.type)
        assert match is not None  # guaranteed by the validator
        return pa.decimal128(int(match[1]), int(match[2]))


class Contract(BaseModel):
    """A dataset's schema, event time and Kafka key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    event_time: str
    key: Annotated[list[str], Field(min_length=1)]
    fields: Annotated[dict[str, FieldSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _references_exist(self) -> Contract:
        if self.event_time not in self.fields:
            raise ValueError(f"event_time field {self.event_time!r} is not among the fields")
        if self.fields[self.event_time].type != "timestamp":
            raise ValueError(f"event_time field {self.event_time!r} must have type timestamp")
        for name in self.key:
            if name not in self.fields:
                raise ValueError(f"key field {name!r} is not among the fields")
        return self

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """The typed schema of valid events, in contract order."""
        return pa.schema(
            [pa.field(name, spec.arrow_type, nullable=not spec.required) for name, spec in self.fields.items()]
        )

    def topic(self, layer: str) -> str:
        """Kafka topic of a layer: ``<dataset>.raw|silver|quarantine|gold``."""
        return f"{self.dataset}.{layer}"


def load_contract(path: Path) -> Contract:
    """Read and validate one contract file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a contract must be a YAML mapping")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'contract'}: {err['msg']}" for err in exc.errors()
        )
        raise ContractError(f"{path}: {problems}") from exc
    if contract.dataset != path.stem:
        raise ContractError(f"{path}: dataset {contract.dataset!r} must match the file name {path.stem!r}")
    return contract


def load_contracts(directory: Path, datasets: list[str]) -> dict[str, Contract]:
    """Load the contracts of the configured datasets, failing on the first missing or broken one."""
    contracts = {}
    for name in datasets:
        path = directory / f"{name}.yaml"
        if not path.exists():
            raise ContractError(f"{path}: no contract for dataset {name!r}")
        contracts[name] = load_contract(path)
    return contracts
