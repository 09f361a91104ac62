"""The data contract: good files load with explicit Arrow types, broken ones are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from archlab.contract import ContractError, load_contract, load_contracts
from archlab.settings import PROJECT_ROOT

CONTRACTS = PROJECT_ROOT / "contracts"


def test_orders_contract_has_typed_schema_event_time_and_key() -> None:
    contract = load_contract(CONTRACTS / "orders.yaml")
    assert contract.topic("raw") == "orders.raw"
    assert contract.key == ["order_id"]
    schema = contract.arrow_schema
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("unit_price").type == pa.decimal128(12, 2)
    assert schema.field("quantity").type == pa.int64()
    assert schema.field("coupon_code").nullable and not schema.field("order_id").nullable


def test_every_shipped_contract_loads() -> None:
    names = [path.stem for path in CONTRACTS.glob("*.yaml")]
    assert "orders" in names
    assert set(load_contracts(CONTRACTS, names)) == set(names)


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


GOOD = """
dataset: demo
version: 1
event_time: ts
key: [id]
fields:
  id: {type: string}
  ts: {type: timestamp}
"""


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("id: {type: string}", "id: {type: strang}", "fields.id.type: Value error, unknown type 'strang'"),
        ("event_time: ts", "event_time: when", "event_time field 'when' is not among the fields"),
        ("key: [id]", "key: [nope]", "key field 'nope' is not among the fields"),
        ("ts: {type: timestamp}", "ts: {type: string}", "event_time field 'ts' must have type timestamp"),
        ("version: 1", "version: 1\ncolour: red", "colour: Extra inputs are not permitted"),
        ("id: {type: string}", "id: {type: 'decimal(3,5)'}", "scale <= precision"),
    ],
)
def test_broken_contract_is_refused_naming_file_and_problem(tmp_path: Path, replace: str, by: str, message: str) -> None:
    path = _write(tmp_path, "demo", GOOD.replace(replace, by))
    with pytest.raises(ContractError) as error:
        load_contract(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_dataset_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="must match the file name"):
        load_contract(_write(tmp_path, "other", GOOD))


def test_missing_contract_is_named(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contract for dataset 'ghost'"):
        load_contracts(tmp_path, ["ghost"])
