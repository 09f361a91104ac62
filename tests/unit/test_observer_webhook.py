"""The observer's webhook delivery log and its alert-history rows, without a network or Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka.structs import ConsumerRecord

from archlab.core import names
from archlab.core.alerts import Alert, AlertState
from archlab.observe.history import AlertHistoryEncoder
from archlab.observe.webhook import WebhookSender

AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def alert(alert_id: str, state: AlertState = AlertState.OPEN) -> Alert:
    return Alert(alert_id=alert_id, dataset="orders", objective="freshness", state=state, opened_at=AT,
                 resolved_at=AT if state is AlertState.RESOLVED else None, updated_at=AT, value=150.0,
                 threshold=120.0, unit="s", message="orders: no new record for 2m 30s (objective 2m)")


def sender(tmp_path: Path) -> WebhookSender:
    return WebhookSender("http://receiver.invalid/alerts", tmp_path / "delivered.log", 10, asyncio.Event())


def queued(webhook: WebhookSender) -> list[tuple[str, str]]:
    out = []
    while not webhook._queue.empty():
        item = webhook._queue.get_nowait()
        out.append((item.alert_id, item.state.value))
    return out


def test_a_first_start_never_replays_the_topic_to_the_receiver(tmp_path: Path) -> None:
    webhook = sender(tmp_path)
    webhook.resume([alert("orders/freshness/1"), alert("orders/freshness/2", AlertState.RESOLVED)])
    assert queued(webhook) == []
    webhook.enqueue(alert("orders/freshness/1"))  # the same state again: already delivered
    webhook.enqueue(alert("orders/freshness/1", AlertState.RESOLVED))
    assert queued(webhook) == [("orders/freshness/1", "resolved")]


def test_a_restart_sends_only_what_the_log_lacks(tmp_path: Path) -> None:
    (tmp_path / "delivered.log").write_text("orders/freshness/1 open\n")
    webhook = sender(tmp_path)
    webhook.resume([alert("orders/freshness/1"), alert("orders/freshness/2")])
    assert queued(webhook) == [("orders/freshness/2", "open")]


def test_a_delivery_is_logged_once_and_never_repeated(tmp_path: Path) -> None:
    posted: list[bytes] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        posted.append(request.content)
        return httpx.Response(204)

    async def deliver_twice() -> None:
        webhook = sender(tmp_path)
        webhook.resume([])
        async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
            for _ in range(2):
                await webhook._deliver(client, alert("orders/freshness/3"))

    asyncio.run(deliver_twice())
    assert [Alert.from_json(body).alert_id for body in posted] == ["orders/freshness/3"]
    assert (tmp_path / "delivered.log").read_text() == "orders/freshness/3 open\n"


def test_history_rows_keep_every_field_and_the_change_date() -> None:
    records = [ConsumerRecord(names.alerts_topic("orders"), 0, offset, 0, 0, b"k", a.to_json(), None, 0, 0, [])
               for offset, a in enumerate([alert("orders/freshness/1"), alert("orders/freshness/1",
                                                                              AlertState.RESOLVED)])]
    [(path, table)] = AlertHistoryEncoder().encode(records).items()
    assert path == names.table_path("alert_history", "orders")
    assert table["state"].to_pylist() == ["open", "resolved"]
    assert table["resolved_at"].to_pylist()[0] is None
    assert {str(day) for day in table[names.DATE_PARTITION].to_pylist()} == {"2026-11-30"}
