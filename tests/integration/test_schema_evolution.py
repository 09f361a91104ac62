"""Schema evolution by contract version, against the real broker and MinIO: a contract that adds
optional or derived fields evolves the silver table in place (old rows read null in the new columns);
one that cannot evolve it is refused when the service starts, before any record is refined under it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from archlab.core import names
from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake.tables import Tables
from tests.integration.conftest import read_all, wait_until
from tests.integration.test_silver import _env, copy_contract

pytestmark = pytest.mark.integration

#: v2 of the orders copy: an optional field and a field derived from an existing one.
NEW_FIELD = "  gift_wrap: {type: bool, required: false}\n"
NEW_DERIVED = "  - {name: has_coupon, type: bool, sql: coupon_code IS NOT NULL}\n"


def _edit(path: Path, *replacements: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in replacements:
        assert text.count(old) == 1, f"{old!r} is not once in {path}"
        text = text.replace(old, new)
    path.write_text(text)


async def _refine_all(settings: Settings, tables: Tables, dataset: str, contracts: Path, start_service) -> None:
    """Run the refiner until it has refined the whole raw topic and landed all of silver, then stop it."""
    refiner = start_service("silver_refiner", **_env(dataset, contracts))
    await wait_caught_up(settings, f"silver-{dataset}", [names.raw_topic(dataset)], timeout_s=120)
    expected = len(await read_all(settings, names.silver_topic(dataset)))

    def landed() -> bool:
        stats = tables.stats(names.table_path("silver", dataset))
        return stats is not None and stats.rows == expected

    await asyncio.to_thread(wait_until, landed, 90, lambda: f"{expected} rows in the silver table\n{refiner.log_tail()}")
    assert refiner.terminate() == 0, refiner.log_tail()


async def test_contract_versions_evolve_silver_in_place_and_an_incompatible_one_is_refused_at_start(
    settings: Settings, tables: Tables, tmp_path: Path, start_service
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    contract = folder / f"{dataset}.yaml"
    silver_path = names.table_path("silver", dataset)

    # v1: the shipped orders contract.
    await produce_synthetic(settings, "orders", count=1_500, rate=0, seed=31, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(dataset))
    await _refine_all(settings, tables, dataset, folder, start_service)
    assert tables.stats(silver_path).rows == 1_500

    # v2: an optional field and a derived one; events drawn from v2 (the generic generator fills gift_wrap).
    _edit(contract, ("version: 1", "version: 2"),
          ("  coupon_code: {type: string, required: false, max_length: 32}\n",
           "  coupon_code: {type: string, required: false, max_length: 32}\n" + NEW_FIELD),
          ("derived:\n", "derived:\n" + NEW_DERIVED))
    v2_settings = settings.model_copy(update={"contracts_dir": folder})
    await produce_synthetic(v2_settings, dataset, count=1_000, rate=0, seed=32, dirty=DirtyRates.clean())
    await _refine_all(settings, tables, dataset, folder, start_service)

    rows = tables.read(silver_path, ["_contract_version", "gift_wrap", "has_coupon", "coupon_code"]).to_pylist()
    old = [r for r in rows if r["_contract_version"] == 1]
    new = [r for r in rows if r["_contract_version"] == 2]
    assert len(old) == 1_500 and len(new) == len(rows) - 1_500 >= 900, (len(old), len(new))
    assert all(r["gift_wrap"] is None and r["has_coupon"] is None for r in old), "old rows must read null"
    assert all(r["has_coupon"] == (r["coupon_code"] is not None) for r in new)
    assert any(r["gift_wrap"] is not None for r in new), "the new field's values did not land"

    # v3: a field removed and a type narrowed. Refused at start: no table changes, no record is refined.
    versions = {p: tables.open(p).version() for p in (silver_path, names.table_path("quarantine", dataset),
                                                      names.table_path("dq", dataset))}
    refined = len(await read_all(settings, names.silver_topic(dataset)))
    await produce_synthetic(v2_settings, dataset, count=300, rate=0, seed=33, dirty=DirtyRates.clean())
    _edit(contract, ("version: 2", "version: 3"), (NEW_FIELD, ""),
          ("    type: decimal(12,2)\n", "    type: decimal(10,2)\n"))
    refused = start_service("silver_refiner", **_env(dataset, folder))
    assert refused.wait(90) != 0, refused.log_tail()
    output = refused.log_path.read_text()  # what the user reads: the refusal names each field
    assert "schema change refused" in output and "'gift_wrap'" in output and "'unit_price'" in output, output
    assert "Traceback" not in output, output
    assert {p: tables.open(p).version() for p in versions} == versions
    assert len(await read_all(settings, names.silver_topic(dataset))) == refined, "v3 refined records"
