"""The exactly-once rules the integration tests and the chaos harness share (archlab/testing/verify.py)."""

from __future__ import annotations

from archlab.testing.verify import landed_exactly_once, refined_exactly_once

SENT = {(0, 0): b"a", (0, 1): b"b", (1, 0): b"c"}


def test_a_faithful_copy_has_no_problems() -> None:
    assert landed_exactly_once([(1, 0, b"c"), (0, 0, b"a"), (0, 1, b"b")], SENT) == []


def test_every_kind_of_landing_problem_is_named() -> None:
    rows = [(0, 0, b"a"), (0, 0, b"a"), (0, 1, b"B"), (2, 0, b"x")]
    assert landed_exactly_once(rows, SENT) == [
        "1 landed twice, e.g. [(0, 0)]", "1 missing, e.g. [(1, 0)]", "1 unexpected, e.g. [(2, 0)]",
        "1 changed, e.g. [(0, 1)]",
    ]


def test_refined_positions_must_be_raw_minus_duplicates_each_once() -> None:
    expected = {(0, 0), (0, 1)}
    assert refined_exactly_once([(0, 1), (0, 0)], expected) == []
    assert refined_exactly_once([(0, 0), (0, 0), (1, 5)], expected) == [
        "1 came out twice", "1 missing, e.g. [(0, 1)]", "1 unexpected (a duplicate or unknown offset), e.g. [(1, 5)]",
    ]
