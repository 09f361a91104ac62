"""What the dashboard says about alerts (``GET /v1/alerts``), as plain data and HTML: the red banner of the
open alerts at the top of the page, and the rows of the alerts panel. Plain functions, so that tests check
them without a browser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from ui import format as fmt

BANNER_LINES = 4
"""Open alerts named in the banner; more are counted in one last line (the panel lists them all)."""
BANNER_CSS = """<style>
.alert-banner {background: #b3261e; color: #fff; border-radius: .5rem; padding: .6rem 1rem; margin: .2rem 0 .8rem;
  font-size: 1rem; line-height: 1.45;}
.alert-banner .alert-line {white-space: normal; overflow-wrap: anywhere;}
.alert-banner .alert-since {opacity: .9; white-space: nowrap;}
.alert-banner .alert-late {font-size: .8rem; opacity: .9;}
</style>"""


@dataclass(frozen=True)
class BannerLine:
    alert_id: str
    dataset: str
    text: str
    since: str


def measured(value: float | None, unit: str) -> str:
    """A value or threshold in its unit: seconds as a duration, a ratio as a percentage, else the number
    and its unit."""
    if value is None:
        return fmt.MISSING
    if unit == "s":
        return f"{int(value) // 60} min" if 60 <= value < 3600 and int(value) % 60 == 0 else fmt.age(value)
    if unit == "ratio":
        return fmt.percent(value)
    places = 0 if float(value).is_integer() else 2
    return f"{fmt.number(value, fmt.NumberFormat(places))} {unit}".strip()


def message(alert: dict[str, Any]) -> str:
    """The observer's sentence without a leading ``resolved: `` or ``<dataset>: ``: the dashboard shows the
    state and the dataset beside it."""
    return alert["message"].removeprefix("resolved: ").removeprefix(f"{alert['dataset']}: ")


def _ago(moment: str, now: datetime) -> str:
    return f"{fmt.clock(moment, seconds=True)} UTC ({fmt.age((now - datetime.fromisoformat(moment)).total_seconds())} ago)"


def banner(alerts: list[dict[str, Any]], now: datetime) -> list[BannerLine]:
    """One line per open alert, the newest first, as the API orders them."""
    return [BannerLine(a["alert_id"], a["dataset"], f"{a['dataset']} · {a['objective']}: {message(a)}",
                       f"open since {_ago(a['opened_at'], now)}")
            for a in alerts if a["state"] == "open"]


def banner_html(lines: list[BannerLine], late: str | None = None) -> str:
    """The red banner; empty when nothing is open. ``late`` says why the list may be out of date."""
    if not lines:
        return ""
    shown = "".join(f'<div class="alert-line" data-alert-id="{escape(line.alert_id)}" data-dataset="{escape(line.dataset)}">'
                    f'⚠ <b>{escape(line.text)}</b> · <span class="alert-since">{escape(line.since)}</span></div>'
                    for line in lines[:BANNER_LINES])
    more = len(lines) - BANNER_LINES
    if more > 0:
        shown += f'<div class="alert-line">and {more} more open alert{"s" if more > 1 else ""}: see Alerts below</div>'
    if late:
        shown += f'<div class="alert-late">{escape(late)}</div>'
    count = f"{len(lines)} open alert{'s' if len(lines) > 1 else ''}"
    return f'<div class="alert-banner" role="alert" aria-label="{count}" data-open="{len(lines)}">{shown}</div>'


def when(moment: str | None, now: datetime) -> str:
    """A time of today as ``14:05:09 UTC``, of another day with its date: ``2026-11-29 14:05:09 UTC``."""
    if moment is None:
        return fmt.MISSING
    day = datetime.fromisoformat(moment).date()
    return f"{'' if day == now.date() else f'{day.isoformat()} '}{fmt.clock(moment, seconds=True)} UTC"


def panel_rows(alerts: list[dict[str, Any]], now: datetime) -> list[dict[str, str]]:
    """The alerts panel's table: open first, then resolved, each newest first (the API's order)."""
    return [{
        "state": a["state"], "dataset": a["dataset"], "objective": a["objective"],
        "opened": when(a["opened_at"], now), "resolved": when(a.get("resolved_at"), now),
        "value": measured(a["value"], a["unit"]), "threshold": measured(a["threshold"], a["unit"]),
        "message": message(a),
    } for a in alerts]
