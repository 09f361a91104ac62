"""Objectives in the contract (parsing, defaults, off, errors) and the observer's pure evaluation:
measures, rate windows, health folding and the no-flapping transitions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from archlab.contract import ContractError, Objectives, RateObjective, load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.observe.evaluate import (
    Kind,
    Measure,
    add_to_window,
    consumer_stall,
    freshness,
    measures,
    rate,
    step,
    volume,
    window_rate,
)
from archlab.observe.signals import (
    BadRecord,
    GroupSample,
    HealthSample,
    fold_dq,
    fold_health,
    parse_dq,
    stalled_since,
)

CONTRACTS = PROJECT_ROOT / "contracts"


def contract_with(tmp_path: Path, objectives: object) -> Path:
    """A copy of the orders contract with ``objectives`` set (its reference tables linked)."""
    raw = yaml.safe_load((CONTRACTS / "orders.yaml").read_text())
    raw["objectives"] = objectives
    (tmp_path / "reference").symlink_to(CONTRACTS / "reference")
    path = tmp_path / "orders.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------------------------------- contract
def test_defaults_when_absent() -> None:
    objectives = load_contract(CONTRACTS / "sensors.yaml").objectives
    assert objectives.freshness == timedelta(minutes=2)
    assert objectives.quarantine_rate == RateObjective(max=0.05, over=timedelta(minutes=10))
    assert objectives.late_rate == RateObjective(max=0.01, over=timedelta(hours=1))
    assert objectives.volume is None
    assert objectives.consumer_stall == timedelta(minutes=5)


def test_written_objectives_and_percentages(tmp_path: Path) -> None:
    path = contract_with(tmp_path, {"freshness": "30s", "quarantine_rate": {"max": "2.5%", "over": "5m"},
                                    "volume": {"min_per_minute": 10}})
    objectives = load_contract(path).objectives
    assert objectives.freshness == timedelta(seconds=30)
    assert objectives.quarantine_rate == RateObjective(max=0.025, over=timedelta(minutes=5))
    assert objectives.volume is not None and objectives.volume.min_per_minute == 10
    assert objectives.late_rate == Objectives().late_rate  # the others keep their defaults


def test_off_switches_one_objective_off(tmp_path: Path) -> None:
    text = yaml.safe_dump({"freshness": "1m"}) + "late_rate: off\nconsumer_stall: 'off'\n"
    path = contract_with(tmp_path, yaml.safe_load(text))  # YAML reads a bare off as false
    objectives = load_contract(path).objectives
    assert objectives.late_rate is None and objectives.consumer_stall is None
    assert objectives.enabled() == ["freshness", "quarantine_rate"]


@pytest.mark.parametrize(("objectives", "problem"), [
    ({"freshness": "2 minutes"}, "objectives.freshness"),
    ({"quarantine_rate": {"max": "5 percent", "over": "10m"}}, "objectives.quarantine_rate.max"),
    ({"quarantine_rate": {"max": 1.5, "over": "10m"}}, "objectives.quarantine_rate.max"),
    ({"late_rate": {"max": 0.01}}, "objectives.late_rate.over"),
    ({"volume": {"min_per_minute": 0}}, "objectives.volume.min_per_minute"),
    ({"freshnes": "1m"}, "objectives.freshnes"),
])
def test_bad_objectives_name_their_place(tmp_path: Path, objectives: object, problem: str) -> None:
    with pytest.raises(ContractError, match=rf"orders.yaml: {problem}:"):
        load_contract(contract_with(tmp_path, objectives))


# ------------------------------------------------------------------------------------------- measures
def test_freshness_breach_starts_when_the_objective_ran_out() -> None:
    assert not freshness("d", last_arrival=100, now=105, objective_s=10).breached
    late = freshness("d", last_arrival=100, now=125, objective_s=10)
    assert late.breached and late.value == 25 and late.breached_since == 110
    assert "no new record for 25s (objective 10s)" in late.message


def test_rate_window_counts_only_its_span() -> None:
    buckets: list[list[float]] = []
    buckets = add_to_window(buckets, at=0, failed=50, total=100, over_s=60)
    buckets = add_to_window(buckets, at=100, failed=0, total=100, over_s=60)
    assert window_rate([buckets], now=100, over_s=60) == (0.0, 100)  # the old bucket left the window
    assert window_rate([buckets], now=500, over_s=60) is None
    other = add_to_window([], at=95, failed=10, total=100, over_s=60)
    assert window_rate([buckets, other], now=100, over_s=60) == (0.05, 200)  # partitions add up


def test_rate_measure_against_its_objective() -> None:
    objective = RateObjective(max=0.05, over=timedelta(seconds=60))
    buckets = add_to_window([], at=10, failed=10, total=100, over_s=60)
    measured = rate("d", Kind.QUARANTINE_RATE, "quarantined", [buckets], 20, objective)
    assert measured is not None and measured.breached and measured.value == 0.1 and measured.unit == "ratio"
    empty = rate("d", Kind.QUARANTINE_RATE, "quarantined", [[]], 20, objective)
    assert not empty.breached and empty.value == 0.0 and "no records in the last 1m" in empty.message


def test_an_open_rate_alert_resolves_once_its_window_has_no_records() -> None:
    """A burst opened it, then the dataset went quiet: the empty window meets the objective, so the alert
    resolves after the settle time instead of staying open until records come again."""
    objective = RateObjective(max=0.05, over=timedelta(seconds=60))
    buckets = add_to_window([], at=10, failed=50, total=100, over_s=60)
    samples = [(now, rate("d", Kind.QUARANTINE_RATE, "quarantined", [buckets], now, objective))
               for now in range(10, 200, 5)]
    # the burst counts until 70 (its bucket leaves the 60 s window then), resolved after 30 s of an empty window
    assert run(samples, settle_s=30) == [(40, True), (105, False)]


def test_volume_needs_a_minute_of_samples() -> None:
    assert volume("d", [[0, 0], [30, 50]], now=30, min_per_minute=10) is None
    measured = volume("d", [[0, 0], [30, 2], [65, 5]], now=65, min_per_minute=10)
    assert measured is not None and measured.breached and measured.value == pytest.approx(4.6, abs=0.1)


def test_measures_skip_what_is_off() -> None:
    objectives = Objectives(late_rate=None, consumer_stall=None)
    found = measures("d", objectives, 100, last_arrival=95, ends=[], stalled_since={}, quarantine=[[]], late=[[]])
    assert set(found) == {"freshness", "quarantine_rate"} and not found["quarantine_rate"].breached


# ---------------------------------------------------------------------------------------- transitions
def breach(value: float = 1.0, since: float | None = None) -> Measure:
    return Measure("quarantine_rate", value, 0.5, "ratio", True, "bad", since)


def met() -> Measure:
    return Measure("quarantine_rate", 0.0, 0.5, "ratio", False, "good")


def run(samples: list[tuple[float, Measure | None]], settle_s: float) -> list[tuple[float, bool]]:
    """Feed measures through ``step`` as the agent does; the (time, opens) of every change."""
    is_open, pending, changes = False, None, []
    for now, measure in samples:
        pending, change = step(is_open, pending, measure, now, settle_s)
        if change is not None:
            changes.append((now, change.opens))
            is_open = change.opens
    return changes


def test_a_breach_opens_only_after_holding_for_the_settle_time() -> None:
    samples = [(0, breach()), (5, breach()), (9, met()), (10, breach()), (15, breach()), (20, breach())]
    assert run(samples, settle_s=10) == [(20, True)]


def test_recovery_resolves_only_after_holding_and_never_flaps() -> None:
    flapping = [(t, breach() if (t // 5) % 2 else met()) for t in range(0, 100, 5)]
    assert run(flapping, settle_s=10) == []  # alternating every 5 s never holds 10 s either way
    samples = [(0, breach()), (10, breach()), (15, met()), (20, breach()), (25, met()), (30, met()), (35, met())]
    assert run(samples, settle_s=10) == [(10, True), (35, False)]


def test_a_held_duration_opens_at_once_with_its_own_start() -> None:
    pending, change = step(False, None, breach(since=42.0), now=50, settle_s=30)
    assert pending is None and change is not None and change.opens and change.breach_started == 42.0


def test_no_measure_changes_nothing_and_forgets_pending() -> None:
    assert step(False, 5.0, None, now=50, settle_s=30) == (None, None)
    assert step(True, 5.0, None, now=50, settle_s=30) == (None, None)


# --------------------------------------------------------------------------------------------- inputs
def test_dq_rows_feed_quarantine_and_lateness() -> None:
    dup = parse_dq(b'{"dataset":"d","minute":"2026-01-01T00:00:00Z","rule":"duplicates","passed":90,"failed":2,'
                   b'"warned":0,"records":100}')
    state = fold_dq(None, dup, at=10, quarantine_over_s=60, late_over_s=60)
    assert state is not None and state["quarantine"] == [[10, 8, 100]] and state["late"] == []
    late = parse_dq(b'{"dataset":"d","minute":"x","rule":"late_beyond_grace.by_1m","passed":9,"failed":1,'
                    b'"warned":0,"records":10}')
    state = fold_dq(state, late, at=11, quarantine_over_s=60, late_over_s=60)
    assert state is not None and state["late"] == [[11, 1, 10]]
    rule = parse_dq(b'{"dataset":"d","minute":"x","rule":"positive","passed":9,"failed":1,"warned":0,"records":10}')
    assert fold_dq(state, rule, at=12, quarantine_over_s=60, late_over_s=60) is None


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty"), (b"{not json", "not_json"), (b'{"rule": "duplicates"}', "bad_fields"),
    (b'{"dataset":"d","rule":"r","passed":-1,"failed":0,"records":1}', "bad_fields"),
    (b'{"dataset":"d","rule":"duplicates","passed":5,"failed":5,"records":1}', "bad_counts"),
])
def test_bad_dq_records_say_why(value: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        parse_dq(value)
    assert caught.value.reason == reason


def sample(at: float, raw_end: int, committed: int = 0, waiting: bool = False) -> HealthSample:
    return HealthSample(dataset="d", at=at, raw_end=raw_end,
                        groups={"silver_refiner": GroupSample(committed=committed, waiting=waiting)})


def test_health_keeps_the_last_arrival_and_stalls() -> None:
    state = fold_health(None, sample(0, 10))
    assert state is not None and state["last_arrival"] == 0
    state = fold_health(state, sample(5, 20, committed=10, waiting=True))
    state = fold_health(state, sample(10, 20, committed=10, waiting=True))
    assert state is not None and state["last_arrival"] == 5
    assert stalled_since(state) == {"silver_refiner": 5}
    assert fold_health(state, sample(7, 30)) is None  # a replayed older sample moves nothing back
    state = fold_health(state, sample(15, 20, committed=20, waiting=False))
    assert state is not None and stalled_since(state) == {}


def test_consumer_stall_is_the_longest_wait_of_a_group_with_records_waiting() -> None:
    assert not consumer_stall("d", {}, now=100, objective_s=60).breached
    stalled = consumer_stall("d", {"silver_refiner": 10, "bronze_sink": 90}, now=100, objective_s=60)
    assert stalled.breached and stalled.value == 90 and stalled.breached_since == 70
    assert "silver_refiner made no progress for 1m 30s" in stalled.message
