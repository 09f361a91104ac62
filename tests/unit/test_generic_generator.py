"""The generic generator: any contract gets a stream whose clean events the silver refiner accepts and
whose dirty events it quarantines for the injected reason, deterministic per seed.

It is run on the shipped contracts (as if they had no hand-written generator) and on
``tests/fixtures/contracts/parcels.yaml``, a contract-only dataset with every field type and
constraint, a reference table, a derived field and rules across fields.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from archlab.contract import Contract, load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.ingest.generators import (
    DIRTY_KINDS,
    INJECTED_HEADER,
    DirtyRates,
    GeneratedRecord,
    GenericGenerator,
    UnknownDatasetError,
    available_datasets,
    make_generator,
)
from archlab.ingest.generators.orders import OrdersGenerator
from archlab.ingest.generators.regex_strings import RegexSampler
from archlab.pipeline.silver.refine import RAW_SCHEMA, Refiner, RefineResult

SHIPPED = PROJECT_ROOT / "contracts"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contracts"
START = datetime(2025, 3, 3, 6, 30, tzinfo=UTC)
CASES = {"orders": SHIPPED, "sensors": SHIPPED, "parcels": FIXTURES}
# The sensors' rules accept few independent draws (unit must match type, value its type's range), so
# its candidates cost most: fewer of its events keep the test quick.
COUNTS = {"orders": 4000, "sensors": 2000, "parcels": 4000}
DIRTY = DirtyRates(**({kind: 0.02 for kind in DIRTY_KINDS} | {"oversized": 0.001}))
VALID_KINDS = {None, "duplicate", "late"}  # de-duplication is the service's job, not the refiner's
FIELD_CHECKS = {
    "wrong_type": {"type"},
    "out_of_range": {"min", "max", "max_length"},
    "unknown_enum": {"allowed", "regex"},
    "missing_field": {"required"},
}


@cache
def contract(dataset: str) -> Contract:
    return load_contract(CASES[dataset] / f"{dataset}.yaml")


@cache
def refiner(dataset: str) -> Refiner:
    return Refiner(contract(dataset), CASES[dataset])


def generic(dataset: str, seed: int = 7, dirty: DirtyRates = DIRTY, directory: Path | None = None) -> GenericGenerator:
    folder = directory or CASES[dataset]
    return GenericGenerator(load_contract(folder / f"{dataset}.yaml"), folder, seed,
                            int(START.timestamp() * 1000), 50.0, dirty)


def refine(dataset: str, records: list[GeneratedRecord], checks: Refiner | None = None) -> RefineResult:
    """Records as the refiner would get them, each stamped by Kafka at the moment it was sent."""
    raw = pa.table(
        {
            "partition": pa.array(np.zeros(len(records), dtype=np.int32)),
            "offset": pa.array(np.arange(len(records), dtype=np.int64)),
            "key": [r.key for r in records],
            "value": [r.value for r in records],
            "kafka_timestamp": pa.array([r.event_time_ms for r in records], pa.int64()).cast(RAW_SCHEMA.field(4).type),
        },
        schema=RAW_SCHEMA,
    )
    return (checks or refiner(dataset)).refine(raw)


def kind_of(record: GeneratedRecord) -> str | None:
    headers = dict(record.headers)
    return headers[INJECTED_HEADER].decode() if INJECTED_HEADER in headers else None


@pytest.fixture(scope="module", params=list(CASES))
def clean(request: pytest.FixtureRequest) -> tuple[str, list[GeneratedRecord], RefineResult]:
    dataset = request.param
    records = generic(dataset, dirty=DirtyRates.clean()).batch(COUNTS[dataset])
    return dataset, records, refine(dataset, records)


@pytest.fixture(scope="module", params=list(CASES))
def dirty(request: pytest.FixtureRequest) -> tuple[str, list[GeneratedRecord], RefineResult]:
    dataset = request.param
    records = generic(dataset, seed=11).batch(COUNTS[dataset])
    return dataset, records, refine(dataset, records)


def test_every_contract_has_a_generator_and_hand_written_ones_are_kept() -> None:
    assert available_datasets(FIXTURES) == ["parcels"]
    assert isinstance(make_generator("parcels", seed=1, start=START, contracts_dir=FIXTURES), GenericGenerator)
    assert isinstance(make_generator("orders", seed=1, start=START), OrdersGenerator)
    with pytest.raises(UnknownDatasetError, match=f"no contract for dataset 'orders' in {FIXTURES}; available: parcels"):
        make_generator("orders", seed=1, start=START, contracts_dir=FIXTURES)


def test_a_shipped_dataset_whose_contract_gained_a_field_gets_the_generic_generator(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED / "reference", tmp_path / "reference")
    text = (SHIPPED / "orders.yaml").read_text()
    (tmp_path / "orders.yaml").write_text(text.replace("fields:\n", "fields:\n  gift_wrap: {type: bool}\n", 1))
    generator = make_generator("orders", seed=1, start=START, contracts_dir=tmp_path, dirty=DirtyRates.clean())
    assert isinstance(generator, GenericGenerator)
    assert all("gift_wrap" in orjson.loads(r.value) for r in generator.batch(20))


def test_the_contract_is_read_from_the_given_folder(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "parcels.yaml"
    path.write_text(path.read_text().replace("allowed: [received, sorted, loaded, delivered, returned]",
                                             "allowed: [lost]"))
    records = make_generator("parcels", seed=1, start=START, contracts_dir=tmp_path, dirty=DirtyRates.clean()).batch(50)
    assert {orjson.loads(r.value)["status"] for r in records} == {"lost"}


def test_clean_events_pass_the_silver_refiner(clean: tuple[str, list[GeneratedRecord], RefineResult]) -> None:
    dataset, records, result = clean
    assert all(r.headers == () for r in records)
    assert result.valid.num_rows / len(records) >= 0.99, result.invalid.to_pylist()[:3]
    spec = contract(dataset)
    for enrichment in spec.enrichment:  # every join field took a value of the reference table
        column = enrichment.output_name(next(iter(enrichment.columns)))
        joined = [field for field in enrichment.on if not spec.fields[field].required]
        if not joined:
            assert result.valid[column].null_count == 0, column


def test_clean_events_are_keyed_timed_and_varied(clean: tuple[str, list[GeneratedRecord], RefineResult]) -> None:
    dataset, records, _ = clean
    spec = contract(dataset)
    events = [orjson.loads(r.value) for r in records]
    for record, event in zip(records, events, strict=True):
        assert record.key == "|".join(str(event[name]) for name in spec.key).encode()
        assert datetime.fromisoformat(event[spec.event_time]).timestamp() * 1000 == record.event_time_ms
    times = [r.event_time_ms for r in records]
    assert times == sorted(times) and times[0] >= START.timestamp() * 1000
    span_s = (times[-1] - times[0]) / 1000
    assert 0.8 < len(records) / span_s / 50.0 < 1.25  # the requested 50 events/s of event time
    assert spec.dedup is not None
    assert len({tuple(e[name] for name in spec.dedup.key) for e in events}) == len(events)
    keys = Counter(r.key for r in records)
    assert 50 < len(keys) < len(records) and keys.most_common(1)[0][1] > 5  # a population, some busier
    for name, field in spec.fields.items():
        values = [e[name] for e in events]
        if not field.required and name not in spec.key:
            assert 0.03 < values.count(None) / len(values) < 0.2, name
        if field.allowed is not None:
            assert len(set(values)) >= min(len(field.allowed), 3), name
        elif field.type in ("float", "int") or field.type.startswith("decimal"):
            assert len(set(values)) > 10, name


def test_each_possible_dirty_kind_is_quarantined_for_its_reason(
    dirty: tuple[str, list[GeneratedRecord], RefineResult],
) -> None:
    dataset, records, result = dirty
    spec = contract(dataset)
    rules = {rule.name for rule in spec.rules}
    quarantined = {row["source_offset"]: [r["check"] for r in row["reasons"]] for row in result.invalid.to_pylist()}
    valid = set(result.valid["_source_offset"].to_pylist())
    seen: Counter[str] = Counter()
    for index, record in enumerate(records):
        kind = kind_of(record)
        seen[kind or "clean"] += 1
        if kind in VALID_KINDS:
            assert index in valid, (kind, quarantined.get(index), record.value[:300])
            continue
        checks = quarantined[index]
        if kind in ("malformed_json", "non_utf8", "oversized"):
            assert checks == [{"malformed_json": "json", "non_utf8": "utf8", "oversized": "size"}[kind]]
        elif kind == "future":
            assert checks == ["event_not_in_future"], record.value
        else:
            field_checks = [check for check in checks if check not in rules]
            assert field_checks, (kind, checks, record.value)
            assert len({check.rsplit(".", 1)[0] for check in field_checks}) == 1, (kind, checks, record.value)
            assert field_checks[0].rsplit(".", 1)[1] in FIELD_CHECKS[kind], (kind, checks, record.value)
    assert set(seen) == {"clean", *DIRTY_KINDS}, seen  # these contracts can express every kind


def test_the_same_seed_gives_the_same_bytes_whatever_the_batch_sizes() -> None:
    whole = generic("parcels").batch(3000)
    pieces = generic("parcels")
    assert [r for size in (1, 7, 1000, 3, 511, 1, 1477) for r in pieces.batch(size)] == whole
    assert len({r.value for r in whole}) > 2900
    other = generic("parcels", seed=8).batch(200)
    assert sum(a.value == b.value for a, b in zip(whole, other, strict=False)) == 0


def test_rules_are_met_by_rejection_and_its_rate_is_known() -> None:
    """Most candidates of the parcels contract pass its cross-field rule; the sensors' far fewer."""
    parcels, sensors = generic("parcels", dirty=DirtyRates.clean()), generic("sensors", dirty=DirtyRates.clean())
    parcels.batch(2000)
    sensors.batch(1000)
    assert 0.6 < parcels.acceptance < 0.95
    assert 0.02 < sensors.acceptance < 0.2


def test_a_contract_that_refuses_everything_still_gets_a_stream(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "parcels.yaml"
    path.write_text(path.read_text().replace("sql: priority <> 1 OR weight_kg <= 20", "sql: weight_kg < 0"))
    records = generic("parcels", dirty=DirtyRates.clean(), directory=tmp_path).batch(300)
    assert len(records) == 300
    assert all(orjson.loads(r.value)["weight_kg"] >= 0 for r in records)  # sent anyway, to be quarantined


def test_a_contract_without_bounds_allowed_values_or_a_low_size_limit_is_not_given_those_dirty_kinds(tmp_path: Path) -> None:
    (tmp_path / "plain.yaml").write_text(
        "dataset: plain\nversion: 1\nevent_time: at\nkey: [name]\nmax_payload_bytes: 4194304\n"
        "fields:\n  at: {type: timestamp}\n  name: {type: string}\n  level: {type: float}\n"
    )
    records = make_generator("plain", seed=3, start=START, contracts_dir=tmp_path, dirty=DIRTY).batch(3000)
    kinds = Counter(kind_of(r) for r in records)
    assert kinds["out_of_range"] == kinds["unknown_enum"] == kinds["oversized"] == 0
    assert kinds["wrong_type"] > 0 and kinds["missing_field"] > 0
    result = refine("plain", records, Refiner(load_contract(tmp_path / "plain.yaml"), tmp_path))
    clean_offsets = {i for i, r in enumerate(records) if kind_of(r) in VALID_KINDS | {"future"}}
    assert clean_offsets <= set(result.valid["_source_offset"].to_pylist())


@pytest.mark.parametrize(
    "pattern",
    [
        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        r"^O-\d{8}$",
        r"^[a-z]{3}-[a-z0-9]+$",
        r"^\d+\.\d+\.\d+$",
        r"^(?:EU|US)-\d{2,4}$",
        r"^[^,;]{3,}$",
        r"\w+@\w+\.(com|org)",
        r"^(a|b)-\1$",
        r"^[A-Z]{2}\s?\d*$",
    ],
)
def test_regex_samples_match_and_are_reproducible(pattern: str) -> None:
    sampler = RegexSampler(pattern)
    texts = sampler.sample(np.random.default_rng(1), 2000, max_length=40)
    assert all(re.search(pattern, text) for text in texts)
    assert max(map(len, texts)) <= 40 and len(set(texts)) > 1
    assert sampler.sample(np.random.default_rng(1), 2000, max_length=40) == texts


def test_regex_syntax_python_cannot_read_is_refused() -> None:
    with pytest.raises(ValueError, match="regex"):
        RegexSampler(r"^\pL+$")
