"""What the KPI panel says about a period of ``GET /v1/datasets/{dataset}/kpis``, as plain data.

Like is compared with like: the tiles show the newest *complete* window against the one before it,
with the change; the window still open is told apart, as figures "so far" without any arrow, because
a window that has just opened holds a few events and would read as a crash against a whole one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ui import format as fmt


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    delta: str | None
    help: str


@dataclass(frozen=True)
class PeriodView:
    title: str
    tiles: list[Tile]
    open_window: str | None
    """The window still open, its figures so far (no comparison), or None when there is none."""


def period_view(period: dict[str, Any], formats: dict[str, fmt.NumberFormat]) -> PeriodView | None:
    """The tiles and captions of one period; None before gold has produced its first window."""
    if not period["figures"]:
        return None
    name = period["period"]
    complete = period.get("complete")
    open_now = not period["final"]
    if complete is None:  # a single window, still open: nothing fair to compare it with yet
        tiles = [_tile(f, formats, compare=False) for f in period["figures"]]
        title = (f"Current {name} so far · {fmt.window(period['window_start'], period['window_end'])} · open, "
                 f"nothing complete to compare with yet")
        return PeriodView(title, tiles, None)
    before = complete["previous_window_start"]
    title = (f"Last complete {name} · {fmt.window(complete['window_start'], complete['window_end'])}"
             + (f" · change against {fmt.clock(before)}–{fmt.clock(complete['window_start'])}" if before
                else " · no earlier window to compare with"))
    tiles = [_tile(f, formats, compare=True) for f in complete["figures"]]
    open_window = None
    if open_now and period["window_start"] != complete["window_start"]:
        so_far = " · ".join(f"{fmt.label(f['name'], _format(f['name'], formats))} "
                            f"{fmt.number(f['value'], _format(f['name'], formats))}" for f in period["figures"])
        open_window = (f"Open {name} {fmt.window(period['window_start'], period['window_end'])}, so far "
                       f"(not compared until complete): {so_far}")
    return PeriodView(title, tiles, open_window)


def _format(name: str, formats: dict[str, fmt.NumberFormat]) -> fmt.NumberFormat:
    return formats.get(name, fmt.NumberFormat(2))


def _tile(figure: dict[str, Any], formats: dict[str, fmt.NumberFormat], compare: bool) -> Tile:
    number_format = _format(figure["name"], formats)
    delta = fmt.change(figure["change"], figure["change_pct"], number_format) if compare else None
    previous = fmt.number(figure["previous"], number_format) if compare else fmt.MISSING
    return Tile(fmt.label(figure["name"], number_format), fmt.number(figure["value"], number_format), delta,
                f"previous window: {previous}")
