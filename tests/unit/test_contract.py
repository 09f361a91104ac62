"""The data contract: good files load with explicit Arrow types, broken ones are refused clearly.

A refusal names the file, where in it the problem is (a field, rule, derived field or enrichment)
and what the problem is, one line per problem: ``<file>: <location>: <problem>``.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from archlab.contract import ContractError, load_contract, load_contracts, load_references
from archlab.core.settings import PROJECT_ROOT

CONTRACTS = PROJECT_ROOT / "contracts"


def test_orders_contract_has_typed_schema_event_time_and_key() -> None:
    contract = load_contract(CONTRACTS / "orders.yaml")
    assert contract.dataset == "orders"
    assert contract.key == ["order_id"]
    schema = contract.arrow_schema
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("unit_price").type == pa.decimal128(12, 2)
    assert schema.field("quantity").type == pa.int64()
    assert schema.field("coupon_code").nullable and not schema.field("order_id").nullable


def test_orders_silver_schema_is_fields_then_derived_then_enrichment_then_lineage() -> None:
    contract = load_contract(CONTRACTS / "orders.yaml")
    schema = contract.silver_schema
    assert schema.names == [
        *contract.fields,
        "amount",
        "amount_eur",
        "fx_rate_to_eur",
        "_contract_version",
        "_source_partition",
        "_source_offset",
        "_kafka_timestamp",
    ]
    assert schema.field("amount_eur").type == pa.decimal128(18, 2)
    assert schema.field("fx_rate_to_eur").type == pa.decimal128(12, 6)
    assert (
        schema.field("_contract_version").type == pa.int32()
        and not schema.field("_contract_version").nullable
    )
    assert schema.field("_source_partition").type == pa.int32()
    assert schema.field("_source_offset").type == pa.int64()
    assert schema.field("_kafka_timestamp").type == pa.timestamp("ms", tz="UTC")
    assert contract.dedup is not None and contract.dedup.key == ["event_id"]
    assert contract.dedup.horizon == timedelta(hours=24)


def test_sensors_contract_enriches_from_devices_and_sites() -> None:
    contract = load_contract(CONTRACTS / "sensors.yaml")
    references = load_references(contract, CONTRACTS)
    assert references["device"].num_rows == 600  # the generator's fleet: D-00001 .. D-00600
    assert references["device"].schema.field("installed_at").type == pa.date32()
    assert set(references["site_ref"]["site"].to_pylist()) == {
        "ber-dc1",
        "ams-hq",
        "mad-plant",
        "osl-wh2",
        "dxb-lab",
        "chi-store",
    }
    assert "device_model" in contract.silver_schema.names and "site_ref_city" in contract.silver_schema.names


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
  id: {type: string, regex: '^[a-z]+$'}
  ts: {type: timestamp}
  quantity: {type: int, min: 1}
  currency: {type: string, allowed: [EUR, USD]}
enrichment:
  - name: fx
    path: reference/rates.csv
    on: {currency: currency}
    columns: {rate: "decimal(10,4)"}
derived:
  - {name: amount, type: "decimal(12,2)", sql: quantity * fx.rate}
rules:
  - {name: big, sql: amount < 1000, action: warn}
  - {name: recent, sql: ts <= _kafka_timestamp + INTERVAL 10 MINUTE}
dedup: {key: [id], horizon: 90s}
"""
RATES = "currency,rate\nEUR,1.0\nUSD,0.9259\n"


@pytest.fixture
def good_dir(tmp_path: Path) -> Path:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "rates.csv").write_text(RATES)
    return tmp_path


def test_the_good_demo_contract_loads(good_dir: Path) -> None:
    contract = load_contract(_write(good_dir, "demo", GOOD))
    assert contract.silver_schema.names[:7] == [
        "id",
        "ts",
        "quantity",
        "currency",
        "amount",
        "fx_rate",
        "_contract_version",
    ]
    assert contract.dedup is not None and contract.dedup.horizon == timedelta(seconds=90)
    assert contract.enrichment[0].on == {"currency": "currency"}  # YAML reads a bare `on:` as true


@pytest.mark.parametrize(
    ("replace", "by", "location", "problem"),
    [
        ("id: {type: string,", "id: {type: strang,", "fields.id.type", "unknown type 'strang'"),
        ("event_time: ts", "event_time: when", "event_time", "field 'when' is not among the fields"),
        ("key: [id]", "key: [nope]", "key", "field 'nope' is not among the fields"),
        ("ts: {type: timestamp}", "ts: {type: string}", "event_time", "field 'ts' must have type timestamp"),
        ("version: 1", "version: 1\ncolour: red", "colour", "Extra inputs are not permitted"),
        ("id: {type: string,", "id: {type: 'decimal(3,5)',", "fields.id.type", "scale <= precision"),
        ("regex: '^[a-z]+$'", "regex: '[a-'", "fields.id.regex", "invalid regular expression '[a-'"),
        (
            "min: 1",
            "min: 1, allowed: [1, 2], regex: x",
            "fields.quantity",
            "regex/max_length need type string",
        ),
        (
            "quantity: {type: int,",
            "quantity: {type: int, decimal_comma: true,",
            "fields.quantity",
            "decimal_comma",
        ),
        ("sql: amount < 1000", "sql: amount <", "rules.big", "invalid sql 'amount <': Parser Error"),
        ("sql: amount < 1000", "sql: amout < 1000", "rules.big", 'Referenced column "amout" not found'),
        (
            "sql: amount < 1000",
            "sql: amount + 1",
            "rules.big",
            "must be a boolean expression, but gives DECIMAL",
        ),
        ("sql: amount < 1000", "sql: count(*) > 1", "rules.big", "cannot contain aggregates"),
        (
            "sql: amount < 1000",
            "sql: 'amount < 1; DROP TABLE x'",
            "rules.big",
            "holds more than one statement",
        ),
        ("name: big", "name: json", "rules.json", "'json' is a built-in check name"),
        ("name: big", "name: recent", "rules.recent", "rule name used more than once"),
        ("sql: quantity * fx.rate}", "sql: quantity * fx.rat}", "derived.amount", "invalid sql"),
        (
            'type: "decimal(12,2)", sql: quantity * fx.rate',
            "type: date, sql: quantity > 1",
            "derived.amount",
            "sql gives BOOLEAN, which does not convert to date",
        ),
        ("name: amount,", "name: id,", "derived.id", "name 'id' is already used by fields.id"),
        ("path: reference/rates.csv", "path: reference/nope.csv", "enrichment.fx", "nope.csv does not exist"),
        ("path: reference/rates.csv", "path: ../rates.csv", "enrichment.0.path", "without '..'"),
        ("columns: {rate:", "columns: {price:", "enrichment.fx", "has no column(s) price"),
        ("on: {currency: currency}", "on: {curr: currency}", "enrichment.fx.on", "field 'curr' is not among"),
        (
            'columns: {rate: "decimal(10,4)"}',
            "columns: {rate: date}",
            "enrichment.fx",
            "column rate has values that are not date",
        ),
        ("dedup: {key: [id]", "dedup: {key: [nope]", "dedup.key", "field 'nope' is not among the fields"),
        ("horizon: 90s", "horizon: 1 day", "dedup.horizon", "invalid duration '1 day'"),
    ],
)
def test_broken_contract_is_refused_naming_file_location_and_problem(
    good_dir: Path, replace: str, by: str, location: str, problem: str
) -> None:
    assert replace in GOOD
    path = _write(good_dir, "demo", GOOD.replace(replace, by))
    with pytest.raises(ContractError) as error:
        load_contract(path)
    lines = str(error.value).splitlines()
    assert any(line.startswith(f"{path}: {location}: ") and problem in line for line in lines), lines


def test_several_problems_are_all_reported(good_dir: Path) -> None:
    body = GOOD.replace("sql: amount < 1000", "sql: amout < 1000").replace("regex: '^[a-z]+$'", "regex: '('")
    with pytest.raises(ContractError) as error:
        load_contract(_write(good_dir, "demo", body))
    assert "rules.big" in str(error.value) and "fields.id.regex" in str(error.value)
    assert len(str(error.value).splitlines()) == 2


def test_repeated_join_key_in_a_reference_is_refused(good_dir: Path) -> None:
    (good_dir / "reference" / "rates.csv").write_text(RATES + "EUR,1.1\n")
    with pytest.raises(ContractError, match=r"enrichment\.fx: .* join column\(s\) currency repeat a value"):
        load_contract(_write(good_dir, "demo", GOOD))


def test_dataset_must_match_file_name(good_dir: Path) -> None:
    with pytest.raises(ContractError, match="must match the file name"):
        load_contract(_write(good_dir, "other", GOOD))


def test_missing_contract_is_named(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no contract for dataset 'ghost'"):
        load_contracts(tmp_path, ["ghost"])


def test_measure_units_are_read_and_must_agree_across_aggregates(tmp_path: Path) -> None:
    contract = load_contract(CONTRACTS / "orders.yaml")
    units = {(a.name, m.name): m.unit for a in contract.aggregates for m in a.measures}
    assert units[("totals_1h", "revenue_eur")] == units[("by_country_1m", "revenue_eur")] == "EUR"
    assert units[("totals_1h", "orders")] is None
    shutil.copytree(CONTRACTS / "reference", tmp_path / "reference")
    text = (CONTRACTS / "orders.yaml").read_text()
    changed = text.replace("{name: revenue_eur, fn: sum, field: amount_eur, unit: EUR}",
                           "{name: revenue_eur, fn: sum, field: amount_eur, unit: USD}")
    assert changed != text
    (tmp_path / "orders.yaml").write_text(changed)
    with pytest.raises(ContractError, match=r"aggregates\.totals_1h\.measures\.revenue_eur: unit 'USD'"):
        load_contract(tmp_path / "orders.yaml")
