"""The optional webhook: a JSON POST of each alert change to ``LAB_ALERT_WEBHOOK_URL``.

The agents never wait for it: a change is put on a bounded queue (a full queue drops it, counted) and
one background task posts, retrying with ``core.retry.backoff``. It keeps a log of the (alert id,
state) pairs it delivered in the observer's state folder, so after a restart or kill -9 a change
already delivered is not sent again, and a change the observer wrote to the alerts topic but had not
yet delivered is sent then (:meth:`WebhookSender.resume`). A repeat can still happen in one place: a
kill between the receiver's answer and the log's append sends that same (alert id, state) once more;
a receiver tells it by the alert id and state, which are the same, so it is harmless. On the first
start with no log, every alert already on the topic counts as delivered: an observer never replays
history to a new receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import httpx
import structlog
from prometheus_client import Counter

from archlab.core.alerts import Alert
from archlab.core.retry import backoff

log = structlog.get_logger(__name__)

WEBHOOK_CALLS = Counter("lab_observer_webhook_total", "Alert changes sent to the webhook, by outcome", ["outcome"])
GIVE_UP_AFTER_S = 300.0


class WebhookSender:
    """Posts alert changes in the background, each (alert id, state) at most once per delivery log."""

    def __init__(self, url: str, delivered_log: Path, queue_size: int, stop: asyncio.Event) -> None:
        self.url = url
        self._log_path = delivered_log
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._stop = stop
        self._delivered: set[tuple[str, str]] = set()

    def resume(self, latest: Iterable[Alert]) -> None:
        """Load the delivery log and queue every latest alert state it lacks (all count as delivered
        when there is no log yet)."""
        latest = list(latest)
        if not self._log_path.exists():
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._record([(alert.alert_id, alert.state.value) for alert in latest])
        for line in self._log_path.read_text(encoding="utf-8").splitlines():
            alert_id, _, state = line.rpartition(" ")
            self._delivered.add((alert_id, state))
        for alert in latest:
            self.enqueue(alert)

    def enqueue(self, alert: Alert) -> None:
        """Queue a change without waiting; dropped (and counted) when the queue is full."""
        if (alert.alert_id, alert.state.value) in self._delivered:
            return
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            WEBHOOK_CALLS.labels("dropped").inc()
            log.warning("webhook queue full, alert change dropped", alert_id=alert.alert_id, state=alert.state)

    async def run(self) -> None:
        """Post queued changes until ``stop``."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            while not self._stop.is_set():
                getting = asyncio.ensure_future(self._queue.get())
                stopping = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait([getting, stopping], return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not getting.done():
                    getting.cancel()
                    return
                await self._deliver(client, getting.result())

    async def _deliver(self, client: httpx.AsyncClient, alert: Alert) -> None:
        key = (alert.alert_id, alert.state.value)
        if key in self._delivered:
            return
        try:
            async for attempt in backoff("alert webhook", stop=self._stop, give_up_after_s=GIVE_UP_AFTER_S,
                                         max_s=30.0, alert_id=alert.alert_id):
                with attempt:
                    response = await client.post(self.url, content=alert.to_json(),
                                                 headers={"content-type": "application/json"})
                    response.raise_for_status()
        except Exception as exc:  # gave up (or stopping): count it, keep serving the others
            WEBHOOK_CALLS.labels("failed").inc()
            log.error("alert webhook gave up", alert_id=alert.alert_id, state=alert.state, error=repr(exc))
            return
        self._delivered.add(key)
        self._record([key])
        WEBHOOK_CALLS.labels("delivered").inc()

    def _record(self, delivered: list[tuple[str, str]]) -> None:
        with self._log_path.open("a", encoding="utf-8") as out:
            out.writelines(f"{alert_id} {state}\n" for alert_id, state in delivered)
            out.flush()
