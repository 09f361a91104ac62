"""A window's distinct values: exactly a set, whether its values sit in the Python set or the sorted array."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archlab.pipeline.gold import distinct
from archlab.pipeline.gold.distinct import DistinctValues

SMALL = 64  # the threshold these tests run with, so that merges happen after a few hundred values


@pytest.fixture(autouse=True)
def _compact_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distinct, "COMPACT_AT", SMALL)


def of(values: Iterable[Any]) -> DistinctValues:
    """A DistinctValues holding ``values``."""
    held = DistinctValues()
    held.add_new(list(dict.fromkeys(values)))
    return held


def feed(batches: list[list[Any]]) -> DistinctValues:
    """Add ``batches`` one by one to a DistinctValues and to a Python set: the same values are new, the same held."""
    values, model = DistinctValues(), set()
    for batch in batches:
        batch = list(dict.fromkeys(batch))  # distinct within a batch, as DuckDB's list_distinct gives them
        assert values.add_new(batch) == [value for value in batch if value not in model]
        model.update(batch)
        assert len(values) == len(model)
    assert sorted(values.values()) == sorted(model)
    assert all(value in values for value in list(model)[:50])
    return values


def test_ids_past_many_merges_stay_exact() -> None:
    rng = random.Random(7)
    pool = [f"O-{i:08d}" for i in range(40 * SMALL)]
    values = feed([rng.sample(pool, rng.randint(0, 300)) for _ in range(400)])
    assert values._sorted is not None and len(values._recent) < len(values._sorted)  # compacted, not a set


def test_integers_past_many_merges_stay_exact() -> None:
    rng = random.Random(11)
    values = feed([[rng.randint(-(2**63), 2**63 - 1) if rng.random() < 0.1 else rng.randint(0, 30 * SMALL)
                    for _ in range(rng.randint(0, 300))] for _ in range(300)])
    assert values._sorted is not None and values._sorted.dtype.kind == "i"


def test_values_differing_only_in_trailing_nuls_or_length_are_distinct() -> None:
    """NumPy's fixed-width bytes drop trailing NULs and are as wide as their longest value."""
    filler = [f"f{i}" for i in range(SMALL + 1)]  # enough to move the values into the sorted array
    values = of([*filler, "a", ""])
    assert values.add_new(["a\x00", "a", "", "a\x00\x00", "a" * 500, "é"]) == ["a\x00", "a\x00\x00", "a" * 500, "é"]
    assert values.add_new([*filler, "a" * 500, "a" * 499]) == ["a" * 499]
    assert len(values) == SMALL + 1 + 2 + 5
    assert "a\x00" in values and "a\x00\x00\x00" not in values and "" in values


def test_values_of_another_type_are_never_confused_with_the_compacted_ones() -> None:
    values = of([str(i) for i in range(SMALL + 1)])
    assert values.add_new([1, "1", 2.5]) == [1, 2.5]
    assert values.add_new([1, 2.5, "1"]) == []


def test_equal_when_holding_the_same_values_however_stored() -> None:
    values = [f"v{i}" for i in range(3 * SMALL)]
    one_by_one = DistinctValues()
    for value in values:
        one_by_one.add_new([value])
    assert one_by_one == of(reversed(values))
    assert one_by_one != of(values[:-1])
    assert one_by_one != of([*values[:-1], "other"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.text(max_size=6), max_size=80), max_size=30))
def test_any_strings_in_any_batches(batches: list[list[str]]) -> None:
    feed(batches)


def test_integers_beyond_64_bits_beside_compacted_ones() -> None:
    values = of(range(SMALL + 1))
    assert values._sorted is not None
    assert values.add_new([2**70, 5, -(2**64), SMALL + 7]) == [2**70, -(2**64), SMALL + 7]
    assert values.add_new([5, 2**70]) == [] and len(values) == SMALL + 4


def test_a_set_that_cannot_be_compacted_stays_a_python_set() -> None:
    values = of([2**70 + i for i in range(SMALL + 1)])
    assert values._sorted is None and values._merge_at == float("inf")
    assert values.add_new([2**70, 2**71]) == [2**71] and len(values) == SMALL + 2
