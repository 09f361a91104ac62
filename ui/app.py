"""Live dashboard of the lakehouse: ``streamlit run ui/app.py`` (port 8501).

Everything comes from the API (LAB_API_URL). Each panel is a Streamlit fragment that re-runs every
LAB_UI_REFRESH_S seconds and reads its endpoints through :class:`ui.feeds.Feeds`, which never waits
long: a slow or failing endpoint leaves its panel showing the last good data, with its age and what is
late, and every other panel goes on. Figures are written by :mod:`ui.format` from the contract's
measure types and units.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import pandas as pd
import streamlit as st

from archlab.core import names
from archlab.core.settings import ConfigurationError, load_settings
from ui import alerts as alerting
from ui import format as fmt
from ui.client import ApiClient, ApiUnavailable
from ui.feeds import Feeds, Reading
from ui.flow import flow, flow_html
from ui.kpis import period_view
from ui.settings import UiSettings

st.set_page_config(page_title="Architecture Lab · live", page_icon="🌊", layout="wide",
                   initial_sidebar_state="collapsed")

try:
    SETTINGS = load_settings(UiSettings)
except ConfigurationError as exc:  # on the page too, not only in the server's log
    st.error(f"```\n{exc}\n```")
    st.stop()

REFRESH_S = SETTINGS.ui_refresh_s
HISTORY = timedelta(hours=1)  # how far back charts and quality look
FIRST_ANSWER_WAIT_S = 1.5  # how long a panel waits for an endpoint it has never had an answer from
TILES_PER_ROW = 4  # at 1280 px and wider, a money figure of 12 digits fits its tile
RULES_SHOWN = 12  # the quality rules with most failures and warnings; the others pass everything
PAGE_CSS = """<style>
[data-testid="stMetricValue"] {font-size: 1.6rem;}
[data-testid="stMetricLabel"] p {white-space: normal;}
.block-container {padding-top: 3.5rem;}
.panel-status {font-size: .8rem; color: #6b6f76;}
.panel-status.late {color: #8a5a00;}
</style>""" + alerting.BANNER_CSS


@st.cache_resource
def client() -> ApiClient:
    return ApiClient(SETTINGS.api_url, SETTINGS.ui_api_timeout_s)


@st.cache_resource
def feeds() -> Feeds:
    return Feeds()


def read(key: Hashable, fetch: Callable[[], Any]) -> Reading:
    """An endpoint's reading now; the first time, wait briefly for its answer so the page opens filled.

    ``key`` names what a panel shows (endpoint, dataset, aggregate), not the moving time bounds that
    ``fetch`` carries: when the hour moves on, the panel keeps its last answer until the new one comes."""
    reading = feeds().read(key, fetch, REFRESH_S)
    if reading.fetched_at is None and reading.error is None:
        reading = feeds().read(key, fetch, REFRESH_S, wait_s=FIRST_ANSWER_WAIT_S)
    return reading


def status(panel: str, reading: Reading) -> bool:
    """One line under a panel's title: how old its data is, or what is late and why; False when there
    is no data to show at all yet."""
    now = time.time()
    late = reading.late(now, REFRESH_S)
    if reading.fetched_at is None:
        text = f"waiting for the API: {reading.error}" if reading.error else "loading…"
    elif late:
        why = reading.error or f"no answer for {fmt.age(now - (reading.pending_since or now))}"
        text = f"late: showing data from {fmt.age(reading.age(now))} ago ({why}); retrying every {REFRESH_S:g} s"
    else:
        text = f"updated {fmt.age(reading.age(now))} ago"
    age = reading.age(now)
    st.html(f'<div class="panel-status{" late" if late or reading.fetched_at is None else ""}" '
            f'data-panel="{escape(panel)}" data-late="{str(late).lower()}" '
            f'data-age="{-1 if age is None else round(age, 1)}">{escape(text)}</div>')
    return reading.fetched_at is not None


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def quality_start() -> str:
    """The start of the quality panel's hour, by arrival time, on a whole minute (so one answer serves
    every refresh of that minute)."""
    return iso(datetime.now(UTC).replace(second=0, microsecond=0) - HISTORY)


def committed(moment: str | None, now: datetime) -> str:
    """A table's last commit as its time and age: ``14:05:09 UTC (12 s ago)``."""
    if moment is None:
        return fmt.MISSING
    ago = fmt.age((now - datetime.fromisoformat(moment)).total_seconds())
    return f"{fmt.clock(moment, seconds=True)} UTC ({ago} ago)"


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---------------------------------------------------------------------------------------------- panels
@st.fragment(run_every=REFRESH_S)
def kpi_panel(dataset: str, formats: dict[str, dict[str, fmt.NumberFormat]]) -> None:
    st.subheader("Headline figures")
    reading = read(("kpis", dataset), lambda: client().kpis(dataset))
    if not status("kpis", reading):
        return
    tiles = st.container(key="kpi-tiles")  # the page's element with CSS class st-key-kpi-tiles
    for period in reading.value["periods"]:
        view = period_view(period, formats.get(period["aggregate"], {}))
        if view is None:
            tiles.info(f"No {period['period']} windows yet for {dataset}: gold has not produced any.")
            continue
        tiles.markdown(f"**{view.title}**")
        for row in chunks(view.tiles, TILES_PER_ROW):
            for column, tile in zip(tiles.columns(TILES_PER_ROW), row, strict=False):
                column.metric(tile.label, tile.value, tile.delta, help=tile.help)
        if view.open_window:
            tiles.caption(view.open_window)


@st.fragment(run_every=REFRESH_S)
def flow_panel(dataset: str) -> None:
    st.subheader("The medallion, live")
    pipeline = read("pipeline", client().pipeline)
    quality = read(("quality", dataset), lambda start=quality_start(): client().quality(dataset, start))
    if not status("pipeline", pipeline):
        return
    sample = pipeline.value
    late = quality.late(time.time(), REFRESH_S) or quality.value is None
    rate = quality.value["quarantine_rate"] if quality.value else None
    st.html(flow_html(flow(sample, dataset, rate, late)))
    st.caption(f"Pipeline health `{sample['health']}` · sampled {fmt.clock(sample['sampled_at'], seconds=True)} UTC "
               f"· amber: a reader {fmt.number(1000)}+ records behind or over 5% quarantined; red: a reader stalled")


def windows_frame(items: list[dict[str, Any]], measure: str, dimension: str | None) -> pd.DataFrame:
    rows = [{"window_start": pd.Timestamp(i["window_start"]), "group": str(i["dimensions"].get(dimension))
             if dimension else "all", measure: None if i["measures"].get(measure) is None
             else float(i["measures"][measure])} for i in items]
    return pd.DataFrame(rows, columns=["window_start", "group", measure])


@st.fragment(run_every=REFRESH_S)
def charts_panel(dataset: str, info: dict[str, Any], formats: dict[str, dict[str, fmt.NumberFormat]]) -> None:
    aggregates = {a["name"]: a for a in info["aggregates"]}
    kpis = feeds().read(("kpis", dataset), lambda: client().kpis(dataset), REFRESH_S).value
    latest = next((p["window_start"] for p in (kpis or {"periods": []})["periods"]
                   if p["period"] == "minute" and p["window_start"]), None)
    start = iso(datetime.fromisoformat(latest) - HISTORY) if latest else None
    left, right = st.columns(2)
    with left:
        series = aggregates[st.session_state.get("series_aggregate") or next(iter(aggregates))]
        measure = st.session_state.get("series_measure") or series["measures"][0]["name"]
        split = st.session_state.get("series_split") or (series["dimensions"] or [None])[0]
        number_format = formats[series["name"]].get(measure, fmt.NumberFormat(2))
        st.subheader(f"{fmt.label(measure, number_format)} per window")
        reading = read(("windows", dataset, series["name"]), lambda: client().windows(dataset, series["name"], start))
        if status("series", reading):
            frame = windows_frame(reading.value, measure, split)
            if frame.empty:
                st.info("No windows yet for this aggregate.")
            else:
                st.line_chart(frame.pivot_table(index="window_start", columns="group", values=measure, aggfunc="sum"),
                              y_label=fmt.label(measure, number_format), x_label="window start (UTC)")
                st.caption(f"`{series['name']}` by {split or 'nothing'} · {fmt.number(len(frame))} windows "
                           f"since {fmt.clock(start)} UTC")
    with right:
        default = list(aggregates)[min(1, len(aggregates) - 1)]
        breakdown = aggregates[st.session_state.get("breakdown_aggregate") or default]
        measure_b = st.session_state.get("breakdown_measure") or breakdown["measures"][0]["name"]
        by = (breakdown["dimensions"] or [None])[0]
        format_b = formats[breakdown["name"]].get(measure_b, fmt.NumberFormat(2))
        st.subheader(f"{fmt.label(measure_b, format_b)} by {by or 'nothing'}")
        reading = read(("windows", dataset, breakdown["name"]),
                       lambda: client().windows(dataset, breakdown["name"], start))
        if status("breakdown", reading):
            frame = windows_frame(reading.value, measure_b, by)
            if frame.empty:
                st.info("No windows yet for this aggregate.")
            else:
                totals = frame.groupby("group")[measure_b].sum().sort_values(ascending=False)
                chart, table = st.columns([3, 2])
                chart.bar_chart(totals, y_label=fmt.label(measure_b, format_b), x_label=by or "")
                table.table(pd.DataFrame({by or "group": totals.index,
                                          fmt.label(measure_b, format_b): [fmt.number(v, format_b) for v in totals]}
                                         ).set_index(by or "group"))
                st.caption(f"`{breakdown['name']}`, summed over the last hour of data")


@st.fragment(run_every=REFRESH_S)
def quality_panel(dataset: str) -> None:
    st.subheader("Data quality, last hour")
    start = quality_start()
    reading = read(("quality", dataset), lambda: client().quality(dataset, start))
    if not status("quality", reading):
        return
    quality = reading.value
    a, b, c = st.columns(3)
    a.metric("records checked", fmt.number(quality["records"]))
    b.metric("quarantined", fmt.number(quality["quarantined"]))
    c.metric("quarantine rate", fmt.percent(quality["quarantine_rate"]))
    rules, reasons = st.columns(2)
    flagged = sorted((r for r in quality["rules"] if r["failed"] or r["warned"]),
                     key=lambda r: (-r["failed"] - r["warned"], r["rule"]))
    if flagged:
        rules.table(pd.DataFrame([{"rule": r["rule"], "passed": fmt.number(r["passed"]),
                                   "failed": fmt.number(r["failed"]), "warned": fmt.number(r["warned"]),
                                   "fail rate": fmt.percent(r["fail_rate"])} for r in flagged[:RULES_SHOWN]]
                                 ).set_index("rule"))
    passing = len(quality["rules"]) - len(flagged)
    rules.caption(f"{fmt.number(passing)} of {fmt.number(len(quality['rules']))} rules passed every record"
                  + (f"; {len(flagged) - RULES_SHOWN} more flagged rules not shown" if len(flagged) > RULES_SHOWN
                     else ""))
    if quality["top_reasons"]:
        reasons.table(pd.DataFrame([{"check": r["check"], "field": r["field"] or fmt.MISSING,
                                     "records": fmt.number(r["records"])} for r in quality["top_reasons"]]
                                   ).set_index("check"))
    else:
        reasons.caption("No quarantined records in this period.")


@st.fragment(run_every=REFRESH_S)
def tables_panel(dataset: str) -> None:
    st.subheader("Lake tables")
    reading = read("tables", client().tables)
    if not status("tables", reading):
        return
    now = datetime.now(UTC)
    tables = [t for t in reading.value["tables"] if t["dataset"] == dataset]
    st.table(pd.DataFrame([{
        "table": t["table"], "version": fmt.number(t["version"]), "files": fmt.number(t["files"]),
        "rows": fmt.number(t["rows"]), "size": fmt.size(t["bytes"]),
        "last commit": committed(t["last_commit"], now),
    } for t in tables], columns=["table", "version", "files", "rows", "size", "last commit"]).set_index("table"))
    paths = [t["table"] for t in tables]
    if not paths:
        return
    silver = names.table_path("silver", dataset)
    chosen = st.selectbox("History of", paths, index=paths.index(silver) if silver in paths else 0, key="history_table")
    history = read(("history", chosen), lambda: client().history(chosen))
    if status("history", history) and history.value:
        st.table(pd.DataFrame([{
            "version": fmt.number(c["version"]), "committed": f"{fmt.clock(c['timestamp'], seconds=True)} UTC",
            "operation": c["operation"],
            "rows added": fmt.number(c["metrics"].get("num_added_rows", c["metrics"].get("num_target_rows_inserted"))),
            "files added": fmt.number(c["metrics"].get("num_added_files", c["metrics"].get("num_target_files_added"))),
            "files removed": fmt.number(c["metrics"].get("num_removed_files",
                                                         c["metrics"].get("num_target_files_removed"))),
        } for c in history.value]).set_index("version"))


@st.fragment(run_every=REFRESH_S)
def alert_banner() -> None:
    """Red, at the top, while any dataset has an open alert; nothing otherwise. Reads the same feed as the
    alerts panel."""
    reading = read("alerts", client().alerts)
    now = time.time()
    if reading.value is None:
        if reading.error:  # no alert known yet, and the endpoint fails: say so, quietly
            status("alerts-banner", reading)
        return
    late = None
    if reading.late(now, REFRESH_S):
        late = f"alerts as of {fmt.age(reading.age(now))} ago: {reading.error or 'the API is slow to answer'}"
    if html := alerting.banner_html(alerting.banner(reading.value["alerts"], datetime.now(UTC)), late):
        st.html(html)


@st.fragment(run_every=REFRESH_S)
def alerts_panel() -> None:
    st.subheader("Alerts")
    reading = read("alerts", client().alerts)
    if not status("alerts", reading):
        return
    alerts = reading.value["alerts"]
    if not alerts:
        st.caption("No open alert, and none resolved in the last 24 h.")
        return
    columns = ["state", "dataset", "objective", "opened", "resolved", "value", "threshold", "message"]
    st.table(pd.DataFrame(alerting.panel_rows(alerts, datetime.now(UTC)), columns=columns).set_index("state"))
    st.caption(f"{fmt.number(reading.value['open'])} open · resolved in the last 24 h below them · value: what "
               "opened the alert, or what resolved it")


# ---------------------------------------------------------------------------------------------- page
def chart_options(info: dict[str, Any]) -> None:
    """The charts' choices, in the (collapsed) sidebar."""
    with st.sidebar:
        st.header("Charts")
        aggregates = [a["name"] for a in info["aggregates"]]
        series = st.selectbox("Time series: aggregate", aggregates, key="series_aggregate")
        chosen = next(a for a in info["aggregates"] if a["name"] == series)
        st.selectbox("measure", [m["name"] for m in chosen["measures"]], key="series_measure")
        st.selectbox("split by", chosen["dimensions"] or [None], key="series_split")
        breakdown = st.selectbox("Breakdown: aggregate", aggregates, index=min(1, len(aggregates) - 1),
                                 key="breakdown_aggregate")
        chosen_b = next(a for a in info["aggregates"] if a["name"] == breakdown)
        st.selectbox("measure ", [m["name"] for m in chosen_b["measures"]], key="breakdown_measure")
        st.caption(f"API: {SETTINGS.api_url} · refresh every {REFRESH_S:g} s")


def main() -> None:
    st.html(PAGE_CSS)
    title, picker = st.columns([4, 1], vertical_alignment="bottom")
    title.title("Architecture Lab · live")
    alert_banner()
    try:
        datasets = client().datasets()
    except ApiUnavailable as exc:
        st.error(f"Cannot reach the data: {exc}. Start it with `make up`; this page retries on its own.")
        offline()
        return
    if not datasets:
        st.warning("The API serves no dataset (LAB_DATASETS is empty).")
        return
    dataset = picker.selectbox("Dataset", [d["name"] for d in datasets], key="dataset")
    info = next(d for d in datasets if d["name"] == dataset)
    formats = {a["name"]: fmt.formats_of(a) for a in info["aggregates"]}
    st.caption(f"{info['description']} · every figure from the API, refreshed every {REFRESH_S:g} s · "
               "times in UTC · chart options in the sidebar (›)")
    chart_options(info)
    kpi_panel(dataset, formats)
    flow_panel(dataset)
    charts_panel(dataset, info, formats)
    quality_panel(dataset)
    alerts_panel()
    tables_panel(dataset)


@st.fragment(run_every=REFRESH_S)
def offline() -> None:
    """While the API is down: check again, and reload the whole page once it answers."""
    try:
        client().datasets()
    except ApiUnavailable:
        return
    st.rerun(scope="app")


main()
