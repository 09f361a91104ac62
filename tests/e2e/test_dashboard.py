"""The dashboard in a real headless Chromium while the real pipeline runs (producer -> silver_refiner
-> gold_aggregator -> api -> ui): the KPI tiles, the quarantine rate and the breakdown show non-zero
figures equal to the API's, the charts render, and a screenshot is kept in test-artifacts/dashboard.png.

The page refreshes on its own while the pipeline still writes, so it is compared with the API as the
API answers at that moment, once the figures that decide which tiles exist have settled."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from archlab.core import names
from archlab.core.settings import Settings
from archlab.devstack.launcher import launch
from archlab.devstack.services import service as registered_service
from archlab.ingest.produce import produce_synthetic
from archlab.testing.processes import free_ports
from tests.integration.conftest import ARTIFACTS, ServiceProcess
from tests.integration.test_api import wait_ready
from tests.integration.test_silver import copy_contract

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@dataclass
class Dashboard:
    dataset: str
    api: str
    ui: str


QUARANTINE_TILE = "quarantine rate (last hour of data)"


def _shown(value: object) -> str:
    return "–" if value is None else str(value)


@pytest.fixture(scope="module")
async def dashboard(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Dashboard]:
    folder = tmp_path_factory.mktemp("ui-contracts")
    dataset = await copy_contract(settings, folder, "orders")
    history = timedelta(minutes=8)
    sent = await produce_synthetic(settings, "orders", count=3_000, rate=0, seed=71, history=history,
                                   topic=names.raw_topic(dataset))
    assert sent.sent == 3_000 and sent.failed == 0
    api_port, ui_port = free_ports(2)
    env = {**os.environ, "LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(folder),
           "LAB_SILVER_GROUP": f"silver-{dataset}", "LAB_GOLD_GROUP": f"gold-{dataset}",
           "LAB_INSTANCE_ID": "ui-test", "LAB_FLUSH_INTERVAL_S": "1", "LAB_API_PORT": str(api_port),
           "LAB_API_HOST": "127.0.0.1", "LAB_API_PIPELINE_POLL_S": "1", "LAB_API_URL": f"http://127.0.0.1:{api_port}",
           "LAB_UI_REFRESH_S": "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    services = [ServiceProcess(name, env, ARTIFACTS / f"test_dashboard-{name}.log")
                for name in ("silver_refiner", "gold_aggregator", "api")]
    ui_log = ARTIFACTS / "test_dashboard-ui.log"
    ui_log.unlink(missing_ok=True)
    ui_service = registered_service("ui")
    ui = launch([*ui_service.command(), "--browser.gatherUsageStats", "false"], log=ui_log,
                env={**env, **ui_service.env(http_port=ui_port)})
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_ready(api, services[2])
        yield Dashboard(dataset, api, f"http://127.0.0.1:{ui_port}")
    finally:
        ui.kill()
        for service in services:
            service.close()


def _hour_before(window_start: str) -> str:
    """The start of the data the page shows: an hour before the latest minute window."""
    return (datetime.fromisoformat(window_start) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


def _api_state(api: str, dataset: str) -> tuple[dict, float | None]:
    """The API's KPIs and the quarantine rate over the hour the page asks the quality endpoint for."""
    kpis = httpx.get(f"{api}/v1/datasets/{dataset}/kpis", timeout=5).json()
    latest = next((p["window_start"] for p in kpis["periods"] if p["period"] == "minute"), None)
    params = {"from": _hour_before(latest)} if latest else {}
    quality = httpx.get(f"{api}/v1/datasets/{dataset}/quality", params=params, timeout=5).json()
    return kpis, quality["quarantine_rate"]


def _settled(api: str, dataset: str, timeout: float = 120) -> dict:
    """The API's KPIs once every period has figures, quarantined records have reached the lake, and
    neither changes any more (the pipeline caught up): from then on the page's tiles are fixed."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        kpis, rate = _api_state(api, dataset)
        if all(p["figures"] for p in kpis["periods"]) and rate is not None and (kpis, rate) == previous:
            return kpis
        previous = (kpis, rate)
        time.sleep(3)
    raise AssertionError(f"KPIs and quarantine rate did not settle: {previous}")


def _expected_tiles(api: str, dataset: str) -> dict[str, str]:
    """Every tile the page shows, as the API's figures are now: one per KPI figure, and the quarantine
    rate (formatted as the page formats it)."""
    kpis, rate = _api_state(api, dataset)
    tiles = {f"{p['period']} · {f['name']}": _shown(f["value"]) for p in kpis["periods"] for f in p["figures"]}
    tiles[QUARANTINE_TILE] = "–" if rate is None else f"{rate:.2%}"
    return tiles


def _tiles(page: Page) -> dict[str, str]:
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values, strict=False)}


def _breakdown_expected(api: str, dataset: str, latest: str) -> dict[str, float]:
    """What the breakdown panel must show: orders of by_country_1m summed per country over the hour of
    data before the latest minute window, computed here from the aggregates endpoint."""
    body = httpx.get(f"{api}/v1/datasets/{dataset}/aggregates/by_country_1m",
                     params={"from": _hour_before(latest), "limit": 1000}, timeout=5).json()
    assert body["next_cursor"] is None
    totals: dict[str, float] = {}
    for item in body["items"]:
        country = str(item["dimensions"]["country"])
        totals[country] = totals.get(country, 0) + float(item["measures"]["orders"])
    return totals


def test_dashboard_shows_the_apis_figures(dashboard: Dashboard) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/provision.sh (apt-get install chromium)"
    kpis = _settled(dashboard.api, dashboard.dataset)
    figures = [_shown(f["value"]) for p in kpis["periods"] for f in p["figures"]]
    assert any(v not in ("0", "0.00", "–") for v in figures), kpis
    latest = next(p["window_start"] for p in kpis["periods"] if p["period"] == "minute")
    breakdown = _breakdown_expected(dashboard.api, dashboard.dataset, latest)
    assert breakdown and sum(breakdown.values()) > 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2200})
            page.goto(dashboard.ui)
            deadline = time.monotonic() + 90
            while True:  # the API is asked again each time: the page must show what it says now
                tiles = _tiles(page)
                expected = _expected_tiles(dashboard.api, dashboard.dataset)
                if tiles == expected or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(500)
            assert tiles == expected, f"tiles {tiles} != API {expected}"
            page.wait_for_selector('[data-testid="stVegaLiteChart"] >> nth=1', timeout=30_000)
            wanted = {k: round(v, 2) for k, v in breakdown.items()}
            shown: dict[str, float] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the fragment re-renders the table every refresh
                table = page.locator('[data-testid="stTable"] table', has_text="orders").first
                rows = table.locator("tbody tr").all_inner_texts()
                shown = {row.split("\t")[0].strip(): float(row.split("\t")[-1]) for row in rows}
                if shown == wanted:
                    break
                page.wait_for_timeout(500)
            assert shown == wanted, (shown, breakdown)
            assert "Traceback" not in page.content()
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
