"""The dashboard's figures: counts whole with separators, money with its currency and two decimals,
decimals at their scale, ratios to two decimals; KPI tiles compare complete windows only."""

from __future__ import annotations

import pytest

from ui import format as fmt
from ui.kpis import period_view

REVENUE = {"name": "revenue_eur", "fn": "sum", "type": "decimal(38,2)", "unit": "EUR"}
ORDERS = {"name": "orders", "fn": "count_distinct", "type": "int", "unit": None}
AVERAGE = {"name": "avg_order_value_eur", "fn": "ratio", "type": "float", "unit": "EUR"}
MEAN = {"name": "avg_value", "fn": "avg", "type": "float", "unit": None}
SCALED = {"name": "max_rate", "fn": "max", "type": "decimal(12,4)", "unit": None}
PPM = {"name": "co2", "fn": "avg", "type": "float", "unit": "ppm"}


@pytest.mark.parametrize(("measure", "value", "shown"), [
    (ORDERS, 3261, "3,261"),
    (ORDERS, "3261.0000", "3,261"),
    (ORDERS, 0, "0"),
    (REVENUE, "317446.5", "€317,446.50"),
    (REVENUE, "-12.005", "-€12.01"),  # half away from zero, on the exact decimal
    (AVERAGE, 12.819284123456789, "€12.82"),
    (MEAN, 12.819284123456789, "12.82"),
    (MEAN, -0.001, "0.00"),  # no "-0.00"
    (SCALED, "1.23456", "1.2346"),
    (PPM, 415.123, "415.12"),
    (ORDERS, None, "–"),
    (MEAN, "NaN", "–"),
])
def test_a_measure_is_written_from_its_contract_type_and_unit(measure: dict, value: object, shown: str) -> None:
    assert fmt.number(value, fmt.measure_format(measure)) == shown


def test_labels_carry_the_unit_and_unknown_currencies_their_code() -> None:
    assert fmt.label("revenue_eur", fmt.measure_format(REVENUE)) == "revenue_eur (EUR)"
    assert fmt.label("co2", fmt.measure_format(PPM)) == "co2 (ppm)"
    assert fmt.label("orders", fmt.measure_format(ORDERS)) == "orders"
    assert fmt.number("5", fmt.NumberFormat(2, "CHF")) == "5.00 CHF"


def test_changes_are_signed_with_their_percentage() -> None:
    money = fmt.measure_format(REVENUE)
    assert fmt.change("1204.5", 3.21, money) == "+€1,204.50 (+3.2%)"
    assert fmt.change(-895, -99.9, fmt.COUNT) == "-895 (-99.9%)"
    assert fmt.change(0, None, fmt.COUNT) == "+0"
    assert fmt.change(None, None, fmt.COUNT) is None


@pytest.mark.parametrize(("function", "value", "shown"), [
    (fmt.percent, 0.012345, "1.23%"), (fmt.percent, None, "–"),
    (fmt.rate, 1234.56, "1,234.6/s"), (fmt.rate, None, "–"),
    (fmt.size, 999, "999 B"), (fmt.size, 1_234_567, "1.2 MB"), (fmt.size, 5 * 10**12, "5.0 TB"),
    (fmt.age, 4.9, "4 s"), (fmt.age, 125, "2 min 5 s"), (fmt.age, 900, "15 min"), (fmt.age, 7500, "2 h 5 min"),
    (fmt.clock, "2026-11-30T05:46:09.000Z", "05:46"),
])
def test_rates_sizes_and_ages(function: object, value: object, shown: str) -> None:
    assert function(value) == shown  # type: ignore[operator]


def _figure(name: str, value: object, previous: object, change: object, pct: float | None) -> dict:
    return {"name": name, "value": value, "previous": previous, "change": change, "change_pct": pct}


FORMATS = {"events": fmt.COUNT, "revenue_eur": fmt.measure_format(REVENUE)}


def test_a_window_that_just_opened_is_not_compared_with_a_whole_one() -> None:
    """The newest minute holds 1 event against 896 in the one before: the tiles show the last complete
    minute against the one before it instead, and the open minute only as figures so far."""
    period = {
        "period": "minute", "aggregate": "by_category_1m", "window_start": "2026-11-30T05:46:00.000Z",
        "window_end": "2026-11-30T05:47:00.000Z", "previous_window_start": "2026-11-30T05:45:00.000Z",
        "final": False,
        "figures": [_figure("events", 1, 896, -895, -99.89), _figure("revenue_eur", "12.50", "9001.00", "-8988.50", -99.86)],
        "complete": {"window_start": "2026-11-30T05:45:00.000Z", "window_end": "2026-11-30T05:46:00.000Z",
                     "previous_window_start": "2026-11-30T05:44:00.000Z",
                     "figures": [_figure("events", 896, 880, 16, 1.82),
                                 _figure("revenue_eur", "9001.00", "8800.5", "200.5", 2.28)]},
    }
    view = period_view(period, FORMATS)
    assert view is not None
    assert [(t.label, t.value, t.delta) for t in view.tiles] == [
        ("events", "896", "+16 (+1.8%)"), ("revenue_eur (EUR)", "€9,001.00", "+€200.50 (+2.3%)")]
    assert "05:45–05:46 UTC" in view.title and "against 05:44–05:45" in view.title
    assert view.open_window is not None and "-895" not in view.open_window
    assert "events 1" in view.open_window and "revenue_eur (EUR) €12.50" in view.open_window


def test_a_lone_open_window_shows_its_figures_without_any_arrow() -> None:
    period = {"period": "hour", "aggregate": "totals_1h", "window_start": "2026-11-30T05:00:00.000Z",
              "window_end": "2026-11-30T06:00:00.000Z", "previous_window_start": None, "final": False,
              "figures": [_figure("events", 12, None, None, None)], "complete": None}
    view = period_view(period, FORMATS)
    assert view is not None and [(t.value, t.delta) for t in view.tiles] == [("12", None)]
    assert "open" in view.title and view.open_window is None


def test_a_final_newest_window_is_the_complete_one() -> None:
    complete = {"window_start": "2026-11-30T05:00:00.000Z", "window_end": "2026-11-30T06:00:00.000Z",
                "previous_window_start": "2026-11-30T04:00:00.000Z", "figures": [_figure("events", 5, 4, 1, 25.0)]}
    period = {"period": "hour", "aggregate": "totals_1h", "window_start": complete["window_start"],
              "window_end": complete["window_end"], "previous_window_start": complete["previous_window_start"],
              "final": True, "figures": complete["figures"], "complete": complete}
    view = period_view(period, FORMATS)
    assert view is not None and view.open_window is None and view.tiles[0].delta == "+1 (+25.0%)"
    assert period_view({**period, "figures": []}, FORMATS) is None
