"""Reading contract files: YAML, then the model, then the SQL checks, each problem on its own line.

A broken contract stops the service that loads it with one line per problem:
``<file>: <field or rule>: <problem>``.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from archlab.contract.checks import check_sql
from archlab.contract.model import Contract, ContractError


def load_contract(path: Path) -> Contract:
    """Read and validate one contract file, its reference tables and its SQL."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: a contract must be a YAML mapping")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("\n".join(_describe(path, exc))) from exc
    if contract.dataset != path.stem:
        raise ContractError(f"{path}: dataset: {contract.dataset!r} must match the file name {path.stem!r}")
    problems = check_sql(contract, path.parent)
    if problems:
        raise ContractError("\n".join(f"{path}: {problem}" for problem in problems))
    return contract


def _describe(path: Path, exc: ValidationError) -> list[str]:
    """One ``<file>: <location>: <problem>`` line per pydantic error."""
    lines = []
    for err in exc.errors():
        location = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        for problem in message.splitlines():  # model-level problems already start with their location
            lines.append(f"{path}: {location}: {problem}" if location else f"{path}: {problem}")
    return lines


def load_contracts(directory: Path, datasets: list[str]) -> dict[str, Contract]:
    """Load the contracts of the configured datasets, failing on the first missing or broken one."""
    contracts = {}
    for name in datasets:
        path = directory / f"{name}.yaml"
        if not path.exists():
            raise ContractError(f"{path}: no contract for dataset {name!r}")
        contracts[name] = load_contract(path)
    return contracts
