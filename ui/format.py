"""How the dashboard writes figures: plain functions, so that every panel formats alike and tests can
check the rules without a browser.

The rules come from the contract, through the API's measure metadata (``fn``, ``type``, ``unit``):
counts are whole numbers with thousands separators, decimals keep their scale, money (a measure whose
unit is an ISO 4217 code) has two decimals and its currency, averages and ratios have two decimals.
Decimal figures arrive as exact strings and are rounded as decimals, never through a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

MISSING = "–"
COUNT_FUNCTIONS = frozenset({"count", "count_distinct", "count_if"})
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
CURRENCY = re.compile(r"[A-Z]{3}")
DECIMAL_TYPE = re.compile(r"decimal\(\s*\d+\s*,\s*(\d+)\s*\)")


@dataclass(frozen=True)
class NumberFormat:
    """How one measure is written: ``places`` decimals, and its unit (money when ``currency``)."""

    places: int
    unit: str | None = None

    @property
    def currency(self) -> bool:
        return self.unit is not None and CURRENCY.fullmatch(self.unit) is not None


COUNT = NumberFormat(0)
"""Counts: events, rows, records, files."""


def measure_format(measure: dict[str, Any]) -> NumberFormat:
    """The format of a measure as ``GET /v1/datasets`` describes it."""
    unit = measure.get("unit")
    kind = measure.get("type") or ""
    if measure.get("fn") in COUNT_FUNCTIONS or kind == "int":
        return NumberFormat(0, unit)
    if unit is not None and CURRENCY.fullmatch(unit):
        return NumberFormat(2, unit)
    if scale := DECIMAL_TYPE.fullmatch(kind):
        return NumberFormat(int(scale.group(1)), unit)
    return NumberFormat(2, unit)


def formats_of(aggregate: dict[str, Any]) -> dict[str, NumberFormat]:
    """Measure name -> format for an aggregate of ``GET /v1/datasets``, with ``events`` (a count)."""
    return {"events": COUNT, **{m["name"]: measure_format(m) for m in aggregate["measures"]}}


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def number(value: Any, fmt: NumberFormat = COUNT) -> str:
    """A figure as the dashboard shows it, e.g. ``3,261``, ``12.82``, ``€1,234.50``; ``–`` when missing."""
    exact = _decimal(value)
    if exact is None:
        return MISSING
    rounded = exact.quantize(Decimal(1).scaleb(-fmt.places), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # no "-0.00"
    text = f"{abs(rounded):,.{fmt.places}f}"
    sign = "-" if rounded < 0 else ""
    if fmt.currency:
        symbol = CURRENCY_SYMBOLS.get(fmt.unit or "")
        return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {fmt.unit}"
    return f"{sign}{text}"


def change(value: Any, percent: float | None, fmt: NumberFormat = COUNT) -> str | None:
    """A change against an earlier window, signed, with its percentage: ``+1,204 (+3.2%)``; None when there
    is nothing to compare (Streamlit then draws no arrow)."""
    exact = _decimal(value)
    if exact is None:
        return None
    text = number(exact, fmt)
    signed = text if text.startswith("-") else f"+{text}"
    return signed if percent is None else f"{signed} ({percent:+.1f}%)"


def label(name: str, fmt: NumberFormat) -> str:
    """A measure's label with its unit: ``revenue_eur (EUR)``."""
    return f"{name} ({fmt.unit})" if fmt.unit else name


def percent(ratio: float | None) -> str:
    """A rate between 0 and 1 as a percentage with two decimals."""
    return MISSING if ratio is None else f"{ratio:.2%}"


def rate(per_second: float | None) -> str:
    """Records per second, one decimal: ``1,234.5/s``."""
    return MISSING if per_second is None else f"{per_second:,.1f}/s"


def size(count_bytes: int | None) -> str:
    """Bytes in B, KB, MB, GB or TB (powers of 1,000), one decimal above bytes."""
    if count_bytes is None:
        return MISSING
    amount = float(count_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1000:
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1000
    return f"{amount:,.1f} TB"


def age(seconds: float | None) -> str:
    """How long ago, to the second under a minute, then in minutes, then hours: ``45 s``, ``3 min``, ``2 h 5 min``."""
    if seconds is None:
        return MISSING
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s" if whole < 600 else f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def clock(iso: str | None, seconds: bool = False) -> str:
    """The UTC time of an API timestamp: ``14:05`` (or ``14:05:09``)."""
    if iso is None:
        return MISSING
    moment = datetime.fromisoformat(iso)
    return moment.strftime("%H:%M:%S" if seconds else "%H:%M")


def window(start: str | None, end: str | None) -> str:
    """A window as ``14:05–14:06 UTC``."""
    return f"{clock(start)}–{clock(end)} UTC"
