"""Live dashboard of the lakehouse: ``streamlit run ui/app.py`` (port 8501).

Everything comes from the API (LAB_API_URL). The live panels are Streamlit fragments that re-run
every LAB_UI_REFRESH_S seconds without reloading the page; an API that is down or a dataset without
data yet shows a message, never a traceback.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from archlab.core.names import dataset_of
from archlab.core.settings import ConfigurationError, load_settings
from ui.client import ApiClient, ApiUnavailable
from ui.settings import UiSettings

try:
    SETTINGS = load_settings(UiSettings)
except ConfigurationError as exc:  # on the page too, not only in the server's log
    st.error(f"```\n{exc}\n```")
    st.stop()

HISTORY = timedelta(hours=1)  # how far back the charts look, from the data's latest window


@st.cache_resource
def client() -> ApiClient:
    return ApiClient(SETTINGS.api_url, SETTINGS.ui_api_timeout_s)


def as_number(value: Any) -> float | None:
    """API figures (decimals come as exact strings) as numbers for charts."""
    return None if value is None else float(value)


def shown(value: Any) -> str:
    """A figure as the API gives it, so that what the tile says is exactly the API's figure."""
    return "–" if value is None else str(value)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def kpi_tiles(dataset: str) -> datetime | None:
    """KPI tiles of the current minute and hour; returns the latest minute window's start."""
    kpis = client().kpis(dataset)
    latest = None
    for period in kpis["periods"]:
        st.markdown(f"**Current {period['period']}** · `{period['aggregate']}`"
                    + (f" · window from {period['window_start']}" if period["window_start"] else ""))
        if not period["figures"]:
            st.info(f"No {period['period']} windows yet for {dataset}: gold has not produced any.")
            continue
        columns = st.columns(len(period["figures"]))
        for column, figure in zip(columns, period["figures"], strict=True):
            delta = None if figure["change"] is None else shown(figure["change"])
            column.metric(f"{period['period']} · {figure['name']}", shown(figure["value"]), delta)
        if period["period"] == "minute":
            latest = datetime.fromisoformat(period["window_start"])
    return latest


def windows_frame(items: list[dict[str, Any]], measure: str, dimension: str | None) -> pd.DataFrame:
    rows = [{"window_start": pd.Timestamp(i["window_start"]), "group": str(i["dimensions"].get(dimension))
             if dimension else "all", measure: as_number(i["measures"].get(measure))} for i in items]
    return pd.DataFrame(rows, columns=["window_start", "group", measure])


def series_and_breakdown(dataset: str, info: dict[str, Any], latest: datetime | None) -> None:
    aggregates = {a["name"]: a for a in info["aggregates"]}
    minute = [a for a in aggregates.values() if a["window_seconds"] == 60] or list(aggregates.values())
    left, right = st.columns(2)
    start = iso(latest - HISTORY) if latest else None
    with left:
        series = aggregates[st.session_state.get("series_aggregate") or minute[0]["name"]]
        measure = st.session_state.get("series_measure") or series["measures"][0]["name"]
        split = st.session_state.get("series_split") or (series["dimensions"] or [None])[0]
        st.markdown(f"**{measure} per window** by {split or 'nothing'} · `{series['name']}`")
        frame = windows_frame(client().windows(dataset, series["name"], start), measure, split)
        if frame.empty:
            st.info("No windows yet for this aggregate.")
        else:
            st.line_chart(frame.pivot_table(index="window_start", columns="group", values=measure, aggfunc="sum"))
            st.caption(f"{len(frame)} windows since {start or 'the beginning'}")
    with right:
        breakdown = aggregates[st.session_state.get("breakdown_aggregate") or (minute[1] if len(minute) > 1 else minute[0])["name"]]
        measure_b = st.session_state.get("breakdown_measure") or breakdown["measures"][0]["name"]
        by = (breakdown["dimensions"] or [None])[0]
        st.markdown(f"**{measure_b} by {by or 'nothing'}**, last hour of data · `{breakdown['name']}`")
        frame = windows_frame(client().windows(dataset, breakdown["name"], start), measure_b, by)
        if frame.empty:
            st.info("No windows yet for this aggregate.")
        else:
            totals = frame.groupby("group")[measure_b].sum().sort_values(ascending=False)
            st.bar_chart(totals)
            st.table(totals.round(2).rename(measure_b).to_frame())


def pipeline_health(dataset: str, latest: datetime | None) -> None:
    pipeline = client().pipeline()
    quality = client().quality(dataset, iso(latest - HISTORY) if latest else None)
    st.markdown(f"**Pipeline** · health `{pipeline['health']}` · sampled {pipeline['sampled_at'] or 'not yet'}")
    if not pipeline["services"]:
        st.info("No consumer group has committed offsets on this dataset's topics yet.")
    lag: dict[str, int] = {}
    rates: dict[str, float] = {}
    for service in pipeline["services"]:
        for group in service["groups"]:
            for topic in group["topics"]:
                if dataset_of(topic["topic"]) == dataset:
                    lag[topic["layer"]] = lag.get(topic["layer"], 0) + topic["lag"]
    for topic in pipeline["topics"]:
        if topic["dataset"] == dataset and topic["events_per_s"] is not None:
            rates[topic["layer"]] = topic["events_per_s"]
    a, b, c = st.columns(3)
    a.markdown("Lag per layer (records)")
    a.table(pd.DataFrame({"lag": lag}) if lag else pd.DataFrame({"lag": []}))
    b.markdown("Events/s into each topic")
    b.table(pd.DataFrame({"events/s": rates}) if rates else pd.DataFrame({"events/s": []}))
    rate = quality["quarantine_rate"]
    c.metric("quarantine rate (last hour of data)", "–" if rate is None else f"{rate:.2%}")
    if quality["top_reasons"]:
        c.table(pd.DataFrame(quality["top_reasons"]).set_index("check"))
    else:
        c.caption("No quarantined records in this period.")


def main() -> None:
    st.set_page_config(page_title="Architecture Lab", layout="wide")
    st.title("Architecture Lab · live")
    try:
        datasets = client().datasets()
    except ApiUnavailable as exc:
        st.error(f"Cannot reach the data: {exc}. Start it with `make up`; this page retries on its own.")
        offline()
        return
    if not datasets:
        st.warning("The API serves no dataset (LAB_DATASETS is empty).")
        return
    names = [d["name"] for d in datasets]
    with st.sidebar:
        dataset = st.selectbox("Dataset", names, key="dataset")
        info = next(d for d in datasets if d["name"] == dataset)
        aggregates = [a["name"] for a in info["aggregates"]]
        series = st.selectbox("Time series: aggregate", aggregates, key="series_aggregate")
        chosen = next(a for a in info["aggregates"] if a["name"] == series)
        st.selectbox("measure", [m["name"] for m in chosen["measures"]], key="series_measure")
        st.selectbox("split by", chosen["dimensions"] or [None], key="series_split")
        default = 1 if len(aggregates) > 1 else 0
        breakdown = st.selectbox("Breakdown: aggregate", aggregates, index=default, key="breakdown_aggregate")
        chosen_b = next(a for a in info["aggregates"] if a["name"] == breakdown)
        st.selectbox("measure ", [m["name"] for m in chosen_b["measures"]], key="breakdown_measure")
        st.caption(f"API: {SETTINGS.api_url} · refresh every {SETTINGS.ui_refresh_s:g} s")
    live(dataset, info)


@st.fragment(run_every=SETTINGS.ui_refresh_s)
def live(dataset: str, info: dict[str, Any]) -> None:
    """The panels that refresh themselves."""
    try:
        latest = kpi_tiles(dataset)
        st.divider()
        series_and_breakdown(dataset, info, latest)
        st.divider()
        pipeline_health(dataset, latest)
    except ApiUnavailable as exc:
        st.error(f"Cannot reach the data: {exc}. Retrying every {SETTINGS.ui_refresh_s:g} s.")


@st.fragment(run_every=SETTINGS.ui_refresh_s)
def offline() -> None:
    """While the API is down: check again, and reload the whole page once it answers."""
    try:
        client().datasets()
    except ApiUnavailable:
        return
    st.rerun(scope="app")


main()
