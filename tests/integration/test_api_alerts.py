"""The API's alerts on the real broker: Alert records produced to ``<dataset>.alerts`` (as the observer writes
them) are answered by ``GET /v1/alerts`` and ``/v1/datasets/{dataset}/alerts`` (a resolved state replaces the
open one of its id; open first, newest first), records written before the API started are served too, a record
that is not an alert is skipped and counted, and the SSE stream delivers each change."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from archlab.core import names
from archlab.core.alerts import Alert, AlertState, alert_id
from archlab.core.settings import Settings
from archlab.kafka.clients import make_producer
from archlab.testing.processes import free_ports
from tests.integration.conftest import ARTIFACTS, ServiceProcess, eventually
from tests.integration.test_api import wait_ready
from tests.integration.test_silver import copy_contract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SEEN_WITHIN_S = 5.0
"""How soon after its record is acknowledged an alert change must show on the API."""


@dataclass
class AlertsApi:
    """An API process over datasets of their own, one per test (each with its alerts topic)."""

    url: str
    settings: Settings
    api: ServiceProcess
    datasets: list[str]
    written_before_start: list[Alert]
    contracts_dir: Path

    def dataset(self, index: int) -> str:
        return self.datasets[index]


def opened(dataset: str, objective: str, at: datetime, value: float = 180.0) -> Alert:
    return Alert(alert_id=alert_id(dataset, objective, at), dataset=dataset, objective=objective,
                 state=AlertState.OPEN, opened_at=at, updated_at=at, value=value, threshold=120.0, unit="s",
                 message=f"{dataset}: no event for {value:.0f} s (objective 2m)")


def resolved(alert: Alert, at: datetime) -> Alert:
    return alert.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": at, "updated_at": at, "value": 2.0})


async def produce(settings: Settings, *alerts: Alert, junk: bytes | None = None) -> list[float]:
    """Write alert states to their datasets' topics in order, as the observer does (keyed by alert id);
    returns each record's timestamp on the topic (epoch seconds)."""
    producer = make_producer(settings)
    await producer.start()
    try:
        stamps = [(await producer.send_and_wait(names.alerts_topic(alert.dataset), alert.to_json(),
                                                key=alert.key)).timestamp / 1000 for alert in alerts]
        if junk is not None:
            await producer.send_and_wait(names.alerts_topic(alerts[0].dataset), junk, key=b"junk")
    finally:
        await producer.stop()
    return stamps


def as_listed(alert: Alert) -> dict[str, object]:
    """An alert as the API lists it."""
    return orjson.loads(orjson.dumps(alert.model_dump(mode="json")))


@pytest.fixture(scope="module")
async def alerts_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AlertsApi]:
    folder: Path = tmp_path_factory.mktemp("alerts-contracts")
    datasets = [await copy_contract(settings, folder, "orders") for _ in range(4)]
    now = datetime.now(UTC)
    early = opened(datasets[3], "freshness", now - timedelta(minutes=30))
    before = [early, resolved(early, now - timedelta(minutes=20)), opened(datasets[3], "volume", now - timedelta(minutes=5))]
    await produce(settings, *before, junk=b"{not an alert")
    (port,) = free_ports(1)
    env = {**os.environ, "LAB_DATASETS": ",".join(datasets), "LAB_CONTRACTS_DIR": str(folder),
           "LAB_API_PORT": str(port), "LAB_API_HOST": "127.0.0.1", "LAB_INSTANCE_ID": "api-alerts-test",
           "LAB_API_LAKE_REFRESH_S": "0.5"}
    ARTIFACTS.mkdir(exist_ok=True)
    api = ServiceProcess("api", env, ARTIFACTS / "test_api_alerts-api.log")
    try:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, url, api)
        yield AlertsApi(url, settings, api, datasets, before, folder)
    finally:
        api.close()


@pytest.fixture
def client(alerts_api: AlertsApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=alerts_api.url, timeout=10) as c:
        yield c


async def listed(client: httpx.Client, path: str, **params: str) -> list[dict[str, object]]:
    response = await asyncio.to_thread(client.get, path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["open"] == sum(a["state"] == "open" for a in body["alerts"])
    return body["alerts"]


async def test_alerts_are_served_one_state_per_id_open_first_newest_first(
        alerts_api: AlertsApi, client: httpx.Client) -> None:
    dataset = alerts_api.dataset(0)
    now = datetime.now(UTC)
    freshness = opened(dataset, "freshness", now - timedelta(minutes=10))
    quarantine = opened(dataset, "quarantine_rate", now - timedelta(minutes=3), value=0.12)
    late = opened(dataset, "late_rate", now - timedelta(hours=1))
    long_ago = opened(dataset, "volume", now - timedelta(days=3))
    await produce(alerts_api.settings, freshness, quarantine, late, long_ago,
                  resolved(late, now - timedelta(minutes=1)), resolved(long_ago, now - timedelta(days=2)))
    expected = [as_listed(a) for a in (quarantine, freshness, resolved(late, now - timedelta(minutes=1)))]

    async def served() -> bool:
        return await listed(client, "/v1/alerts", dataset=dataset) == expected

    await eventually(served, SEEN_WITHIN_S, lambda: f"the alerts of {dataset}: {client.get('/v1/alerts').text}")
    assert await listed(client, f"/v1/datasets/{dataset}/alerts") == expected
    assert await listed(client, "/v1/alerts", dataset=dataset, state="open") == expected[:2]
    assert await listed(client, "/v1/alerts", dataset=dataset, state="resolved", recent="7d") == [
        expected[2], as_listed(resolved(long_ago, now - timedelta(days=2)))]
    everyone = await listed(client, "/v1/alerts")
    assert [a for a in everyone if a["dataset"] == dataset] == expected
    assert {a["dataset"] for a in everyone} <= set(alerts_api.datasets)


async def test_alerts_written_before_the_api_started_are_served_and_a_bad_record_is_counted(
        alerts_api: AlertsApi, client: httpx.Client) -> None:
    dataset = alerts_api.dataset(3)
    early, early_resolved, volume = alerts_api.written_before_start
    # ready means the alerts topics were read to their end: no waiting here
    assert await listed(client, "/v1/alerts", dataset=dataset) == [as_listed(volume), as_listed(early_resolved)]
    assert alerts_api.api.alive()
    metrics = client.get("/metrics").text
    assert f'lab_api_alert_records_skipped_total{{dataset="{dataset}",reason="not an alert"}} 1.0' in metrics


async def test_the_stream_delivers_each_change(alerts_api: AlertsApi) -> None:
    dataset, other = alerts_api.dataset(1), alerts_api.dataset(2)
    events: list[tuple[str, dict[str, object], float]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with httpx.AsyncClient(base_url=alerts_api.url, timeout=None) as http:
            async with http.stream("GET", "/v1/alerts/stream", params={"dataset": dataset}) as response:
                assert response.status_code == 200
                event = None
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event in ("ready", "alert"):
                        events.append((event, orjson.loads(line.split(":", 1)[1]), time.time()))
                        if event == "ready":
                            ready.set()

    async def received(count: int) -> bool:
        return len(events) >= count

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert events[0][1] == {"open": 0, "alerts": []}
        alert = opened(dataset, "freshness", datetime.now(UTC) - timedelta(seconds=40))
        *_, opened_on_topic = await produce(alerts_api.settings, opened(other, "freshness", datetime.now(UTC)), alert)
        await eventually(lambda: received(2), SEEN_WITHIN_S, lambda: f"the open event: {events}")
        closed = resolved(alert, datetime.now(UTC))
        *_, resolved_on_topic = await produce(alerts_api.settings, alert, closed)  # the open state again: no change
        await eventually(lambda: received(3), SEEN_WITHIN_S, lambda: f"the resolved event: {events}")
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    # exactly these two: not the other dataset's alert, not the repeated open state
    assert [(name, body) for name, body, _ in events[1:]] == [("alert", as_listed(alert)), ("alert", as_listed(closed))]
    delays = {"opened_s": round(events[1][2] - opened_on_topic, 3),
              "resolved_s": round(events[2][2] - resolved_on_topic, 3)}
    print("alert stream delays after the record's timestamp on the topic:", delays)
    assert max(delays.values()) < SEEN_WITHIN_S, delays


async def test_bad_parameters_are_refused_by_name(client: httpx.Client) -> None:
    for params, name in (({"dataset": "nope"}, "dataset"), ({"recent": "soon"}, "recent"),
                         ({"recent": "999999d"}, "recent"), ({"state": "closed"}, "state")):
        response = await asyncio.to_thread(client.get, "/v1/alerts", params=params)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", name]
    assert (await asyncio.to_thread(client.get, "/v1/datasets/nope/alerts")).status_code == 404


async def test_an_open_stream_ends_when_the_api_stops(alerts_api: AlertsApi) -> None:
    """SIGTERM with a client on the alerts stream: the API ends the stream and exits cleanly, without
    waiting for the client to go."""
    (port,) = free_ports(1)
    env = {**os.environ, "LAB_DATASETS": alerts_api.dataset(2), "LAB_CONTRACTS_DIR": str(alerts_api.contracts_dir),
           "LAB_API_PORT": str(port), "LAB_API_HOST": "127.0.0.1", "LAB_INSTANCE_ID": "api-alerts-stop-test"}
    api = ServiceProcess("api", env, ARTIFACTS / "test_api_alerts-api-stopped.log")
    try:
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, url, api)
        ready = asyncio.Event()

        async def listen() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=None) as http:
                async with http.stream("GET", "/v1/alerts/stream") as response:
                    async for line in response.aiter_lines():
                        if line.startswith("event: ready"):
                            ready.set()

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 10)
        stopped = time.monotonic()
        exit_code = await asyncio.to_thread(api.terminate, 20)
        took = time.monotonic() - stopped
        await asyncio.wait_for(asyncio.gather(listener, return_exceptions=True), 5)
        assert exit_code == 0, api.log_tail()
        print(f"the API stopped {took:.2f} s after SIGTERM with an alerts stream open")
        # uvicorn cancels what still runs 5 s after it stops (services/api's timeout_graceful_shutdown): well before
        # that, the stream was ended by the API itself
        assert took < 4, f"the API took {took:.1f} s to stop with a stream open"
    finally:
        api.close()
