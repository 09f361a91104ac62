"""The dashboard in a real headless Chromium while the real pipeline runs (producer -> bronze_sink,
silver_refiner -> gold_aggregator -> api -> ui), at 1280x800 and 1920x1080:

- the KPI tiles show the API's newest complete windows, counts without decimals and money with two;
- the medallion picture's figures are the API's; no KPI, table or picture text is cut off its box;
- a window that has just opened is not compared with a whole one (no misleading drop);
- a quality endpoint that fails (its lake tables lost data files) leaves every other panel updating.

Screenshots are kept in test-artifacts/dashboard-<width>x<height>.png and dashboard-quality-failing.png.
The page refreshes on its own while the pipeline still writes, so it is compared with the API as the
API answers at that moment, once the figures have settled."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from deltalake import DeltaTable, write_deltalake
from playwright.sync_api import Browser, Page

from archlab.core import names
from archlab.core.settings import Settings
from archlab.devstack.launcher import launch
from archlab.devstack.services import service as registered_service
from archlab.ingest.generators import DirtyRates, make_generator
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import KeyedBatchSender, make_producer
from archlab.lake.tables import Tables
from archlab.testing.processes import free_ports
from tests.integration.conftest import ARTIFACTS, ServiceProcess
from tests.integration.test_api import wait_ready
from tests.integration.test_silver import copy_contract
from ui.flow import flow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

VIEWPORTS = [(1280, 800), (1920, 1080)]
COUNT = re.compile(r"-?\d{1,3}(,\d{3})*")
MONEY = re.compile(r"-?€\d{1,3}(,\d{3})*\.\d{2}")
TRUNCATED_JS = """() => {
  const boxes = document.querySelectorAll(
    '[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] *, [data-testid="stMetricValue"], ' +
    '[data-testid="stMetricValue"] *, [data-testid="stMetricDelta"], [data-testid="stMetricDelta"] *, ' +
    '[data-testid="stTable"], [data-testid="stTable"] *, .medallion, .medallion *');
  return [...boxes].filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.tagName}.${e.className}: ${e.textContent.slice(0, 60)} (${e.scrollWidth} > ${e.clientWidth})`);
}"""


@dataclass
class Dashboard:
    dataset: str
    api: str
    ui: str
    settings: Settings


@pytest.fixture(scope="module")
async def dashboard(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dashboard]:
    folder = tmp_path_factory.mktemp("ui-contracts")
    dataset = await copy_contract(settings, folder, "orders")
    sent = await produce_synthetic(settings, "orders", count=3_000, rate=0, seed=71, history=timedelta(minutes=8),
                                   topic=names.raw_topic(dataset))
    assert sent.sent == 3_000 and sent.failed == 0
    api_port, ui_port = free_ports(2)
    # group names that start with their service's name, so that the API names the services in the picture
    env = {**os.environ, "LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(folder),
           "LAB_BRONZE_GROUP": f"bronze_sink-{dataset}", "LAB_SILVER_GROUP": f"silver_refiner-{dataset}",
           "LAB_GOLD_GROUP": f"gold_aggregator-{dataset}", "LAB_INSTANCE_ID": "ui-test", "LAB_FLUSH_INTERVAL_S": "1",
           "LAB_API_PORT": str(api_port), "LAB_API_HOST": "127.0.0.1", "LAB_API_PIPELINE_POLL_S": "1",
           "LAB_API_URL": f"http://127.0.0.1:{api_port}", "LAB_UI_REFRESH_S": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    services = [ServiceProcess(name, env, ARTIFACTS / f"test_dashboard-{name}.log")
                for name in ("bronze_sink", "silver_refiner", "gold_aggregator", "api")]
    ui_log = ARTIFACTS / "test_dashboard-ui.log"
    ui_log.unlink(missing_ok=True)
    ui_service = registered_service("ui")
    ui = launch([*ui_service.command(), "--browser.gatherUsageStats", "false"], log=ui_log,
                env={**env, **ui_service.env(http_port=ui_port)})
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_ready(api, services[3])
        yield Dashboard(dataset, api, f"http://127.0.0.1:{ui_port}", settings)
    finally:
        ui.kill()
        for service in services:
            service.close()


def _get(dashboard: Dashboard, path: str, **params: Any) -> Any:
    response = httpx.get(f"{dashboard.api}{path}", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def _settled(dashboard: Dashboard, timeout: float = 150) -> dict:
    """The API's KPIs once both periods have a complete window, every table has rows, and nothing
    changes any more (the pipeline caught up): from then on the page's figures are fixed."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        kpis = _get(dashboard, f"/v1/datasets/{dashboard.dataset}/kpis")
        rows = {t["table"]: t["rows"] for t in _get(dashboard, "/v1/tables")["tables"]
                if t["layer"] != "alert_history"}  # the observer's table: empty while no alert changes
        state = (kpis, rows)
        if all(p["complete"] for p in kpis["periods"]) and all(rows.values()) and state == previous:
            return kpis
        previous = state
        time.sleep(3)
    raise AssertionError(f"KPIs and tables did not settle: {previous}")


def _measures(dashboard: Dashboard) -> dict[str, dict[str, dict]]:
    """aggregate -> measure name -> the API's description of it (type and unit), ``events`` included."""
    info = next(d for d in _get(dashboard, "/v1/datasets")["datasets"] if d["name"] == dashboard.dataset)
    return {a["name"]: {"events": {"name": "events", "fn": "count", "type": "int", "unit": None},
                        **{m["name"]: m for m in a["measures"]}} for a in info["aggregates"]}


def _expected_tiles(dashboard: Dashboard) -> list[tuple[str, Decimal, dict]]:
    """(label, exact value, measure) of every tile: each period's newest complete window, in page order."""
    measures = _measures(dashboard)
    tiles = []
    for period in _get(dashboard, f"/v1/datasets/{dashboard.dataset}/kpis")["periods"]:
        for figure in period["complete"]["figures"]:
            measure = measures[period["aggregate"]][figure["name"]]
            label = f"{figure['name']} ({measure['unit']})" if measure["unit"] else figure["name"]
            tiles.append((label, Decimal(str(figure["value"])), measure))
    return tiles


def _tiles(page: Page) -> list[tuple[str, str]]:
    labels = page.locator('.st-key-kpi-tiles [data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('.st-key-kpi-tiles [data-testid="stMetricValue"]').all_inner_texts()
    return [(label.strip(), value.strip()) for label, value in zip(labels, values, strict=False)]


def _value_of(text: str) -> Decimal:
    return Decimal(text.replace("€", "").replace(",", ""))


def _rounded(value: Decimal, measure: dict) -> Decimal:
    if measure["fn"] in ("count", "count_distinct", "count_if") or measure["type"] == "int":
        return value.quantize(Decimal(1))
    return value.quantize(Decimal("0.01"))


def _kpi_mismatch(dashboard: Dashboard, page: Page) -> str | None:
    """Why the page's KPI tiles differ from the API's newest complete windows (None: they agree), each
    tile written as its kind says: counts whole, money in euros with two decimals."""
    shown = _tiles(page)
    expected = [(label, _rounded(value, measure), measure) for label, value, measure in _expected_tiles(dashboard)]
    if [label for label, _ in shown] != [label for label, _, _ in expected]:
        return f"labels {shown} != {[e[0] for e in expected]}"
    for (label, text), (_, value, measure) in zip(shown, expected, strict=True):
        if measure["unit"] == "EUR" and not MONEY.fullmatch(text):
            return f"{label}: {text!r} is not euros with two decimals"
        if measure["fn"] in ("count", "count_distinct", "count_if") and not COUNT.fullmatch(text):
            return f"{label}: {text!r} is not a whole number"
        if _value_of(text) != value:
            return f"{label}: {text!r} != API {value}"
    return None


def _flow_mismatch(dashboard: Dashboard, page: Page) -> str | None:
    """Why the medallion's figures differ from the API's pipeline sample (None: they agree)."""
    pipeline = _get(dashboard, "/v1/pipeline")
    start = (datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    rate = _get(dashboard, f"/v1/datasets/{dashboard.dataset}/quality", **{"from": start})["quarantine_rate"]
    picture = flow(pipeline, dashboard.dataset, rate, quality_late=False)
    expected = {f.key: f.text for node in (picture.raw, picture.first_hop, *picture.landed, picture.second_hop,
                                            picture.gold) for f in node.figures}
    shown = dict(page.eval_on_selector_all("[data-figure]", "els => els.map(e => [e.dataset.figure, e.textContent])"))
    if shown != expected:
        return f"picture {shown} != API {expected}"
    rows = {t["layer"]: t["rows"] for t in pipeline["lake"] if t["layer"] in ("bronze", "silver", "quarantine")}
    direct = {f"{layer}.rows": f"{n:,}" for layer, n in rows.items()}
    return None if all(shown[k] == v for k, v in direct.items()) else f"rows {shown} != lake {direct}"


def _until(what: str, check: Any, timeout: float = 60) -> None:
    """Wait until ``check()`` returns None (it returns why not otherwise), asking anew each time."""
    deadline = time.monotonic() + timeout
    why = check()
    while why is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        why = check()
    assert why is None, f"{what}: {why}"


def _screenshot(page: Page, name: str) -> None:
    """The whole page at the tested width: Streamlit scrolls inside its main section, not the document, so
    the window is made as tall as that section's content first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    width = page.viewport_size["width"] if page.viewport_size else VIEWPORTS[0][0]
    page.set_viewport_size({"width": width, "height": max(height, 600)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(ARTIFACTS / name))


def _open(browser: Browser, dashboard: Dashboard, width: int, height: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(dashboard.ui)
    page.wait_for_selector("[data-figure]", timeout=60_000)
    return page


@pytest.mark.parametrize(("width", "height"), VIEWPORTS)
def test_dashboard_shows_the_apis_figures_readably(dashboard: Dashboard, browser: Browser, width: int,
                                                   height: int) -> None:
    _settled(dashboard)
    page = _open(browser, dashboard, width, height)
    try:
        _until("KPI tiles equal the API's complete windows", lambda: _kpi_mismatch(dashboard, page))
        _until("the medallion's figures equal the API's", lambda: _flow_mismatch(dashboard, page))
        page.wait_for_selector('[data-testid="stVegaLiteChart"] >> nth=1', timeout=30_000)
        page.wait_for_selector('[data-testid="stTable"] >> nth=3', timeout=30_000)  # breakdown, quality x2, tables
        toolbar = '[data-testid="stAppDeployButton"], [data-testid="stMainMenuButton"]'
        assert page.locator(toolbar).count() == 0, "Streamlit's Deploy button or menu is shown"
        assert page.title() == "Architecture Lab · live"
        assert page.evaluate(TRUNCATED_JS) == []
        assert "Traceback" not in page.content()
    finally:  # kept whether the page passed or not: it shows what a failure was about
        _screenshot(page, f"dashboard-{width}x{height}.png")
        page.close()


async def _orders_at(settings: Settings, dataset: str, start: datetime, count: int) -> None:
    """``count`` clean orders with event times from ``start`` on (a minute the data has not reached yet)."""
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = await KeyedBatchSender.for_topic(producer, names.raw_topic(dataset))
        generator = make_generator("orders", seed=72, start=start, events_per_second=1000,
                                   dirty=DirtyRates.clean(), seasonal=False)
        for record in generator.batch(count):
            await sender.send(record.key, record.value, record.headers)
        await sender.flush()
    finally:
        await producer.stop()


def test_a_window_that_has_just_opened_shows_no_drop(dashboard: Dashboard, browser: Browser) -> None:
    """A few orders in a new minute: the API's newest minute holds almost nothing against a whole one
    (a crash of nearly -100% if compared), and the page keeps comparing complete minutes instead."""
    before = _settled(dashboard)
    minute = next(p for p in before["periods"] if p["period"] == "minute")
    newest = minute["window_start"]
    # the backfill's event times may run a little ahead of the clock: the new minute follows its newest one
    opening = datetime.fromisoformat(minute["window_end"]) + timedelta(seconds=1)
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        thread.submit(asyncio.run, _orders_at(dashboard.settings, dashboard.dataset, opening, 5)).result()

    def opened() -> str | None:
        minute = next(p for p in _get(dashboard, f"/v1/datasets/{dashboard.dataset}/kpis")["periods"]
                      if p["period"] == "minute")
        events = next(f for f in minute["figures"] if f["name"] == "events")
        if minute["window_start"] == newest or minute["final"]:
            return f"no new open minute yet: {minute['window_start']}"
        return None if events["change_pct"] is not None and events["change_pct"] < -50 else f"no drop: {events}"

    _until("a new minute to open with a few events", opened, timeout=60)
    page = _open(browser, dashboard, *VIEWPORTS[0])
    try:
        _until("KPI tiles equal the API's complete windows", lambda: _kpi_mismatch(dashboard, page))
        minute = next(p for p in _get(dashboard, f"/v1/datasets/{dashboard.dataset}/kpis")["periods"]
                      if p["period"] == "minute")
        crash = next(f for f in minute["figures"] if f["name"] == "events")
        deltas = page.locator('.st-key-kpi-tiles [data-testid="stMetricDelta"]').all_inner_texts()
        assert not any(f"({crash['change_pct']:+.1f}%)" in d for d in deltas), (deltas, crash)
        assert page.get_by_text(re.compile(r"^Open minute .* so far")).count() == 1
    finally:
        _screenshot(page, "dashboard-window-just-opened.png")
        page.close()


def _break_quality_tables(dashboard: Dashboard) -> None:
    """Commit one more version of the dq and quarantine tables (a copy of one of their rows), then lose
    every data file from S3 while the Delta logs still name them: the quality endpoint then fails on every
    read, as it would after a botched manual clean-up. The new version matters: the API keeps answers per
    table version, and files lost under a version it has already read would never be read again."""
    tables = Tables.from_settings(dashboard.settings)
    for layer in ("dq", "quarantine"):
        uri = tables.uri(names.table_path(layer, dashboard.dataset))
        table = DeltaTable(uri, storage_options=tables.storage_options)
        write_deltalake(table, table.to_pyarrow_table().slice(0, 1), mode="append")
        table = DeltaTable(uri, storage_options=tables.storage_options)
        tables.lake.fs.rm(table.file_uris())


def _panels(page: Page) -> dict[str, tuple[bool, float]]:
    pairs = page.eval_on_selector_all(
        "[data-panel]", "els => els.map(e => [e.dataset.panel, e.dataset.late === 'true', Number(e.dataset.age)])")
    return {name: (late, age) for name, late, age in pairs}


def _not_refreshed(page: Page, names: tuple[str, ...], since: float) -> str | None:
    """Which of the panels is late or has shown no answer newer than ``since`` (monotonic), if any."""
    panels, waited = _panels(page), time.monotonic() - since
    stale = {name: panels.get(name) for name in names
             if name not in panels or panels[name][0] or panels[name][1] >= waited}
    return None if not stale else f"not refreshed in the last {waited:.0f} s: {stale}"


def test_a_failing_quality_endpoint_leaves_every_other_panel_updating(dashboard: Dashboard, browser: Browser) -> None:
    _settled(dashboard)
    page = _open(browser, dashboard, *VIEWPORTS[0])
    try:
        _until("every panel up to date", lambda: None if _panels(page) and not any(
            late for late, _ in _panels(page).values()) else f"{_panels(page)}")
        _break_quality_tables(dashboard)
        start = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

        def failing() -> str | None:
            status = httpx.get(f"{dashboard.api}/v1/datasets/{dashboard.dataset}/quality",
                               params={"from": start}, timeout=10).status_code
            return None if status >= 500 else f"quality answered {status}"

        _until("the quality endpoint to fail", failing, timeout=30)
        _until("the quality panel to say it is late", lambda: None if _panels(page).get("quality", (False,))[0]
               else f"{_panels(page)}", timeout=30)
        _until("the picture to mark the quarantine share late",
               lambda: None if page.locator('[data-figure="quarantine.share"]').inner_text().endswith("(late)")
               else page.locator('[data-figure="quarantine.share"]').inner_text(), timeout=30)
        others = ("kpis", "pipeline", "series", "breakdown", "tables", "history")
        for _ in range(3):  # every other panel keeps getting fresh answers: it refreshes again, and again
            since = time.monotonic()
            _until("every other panel to show a newer answer", lambda: _not_refreshed(page, others, since))
        _until("KPI tiles equal the API's complete windows", lambda: _kpi_mismatch(dashboard, page))
        assert "Traceback" not in page.content()
    finally:
        _screenshot(page, "dashboard-quality-failing.png")
        page.close()
