"""The observer's open alerts: rebuilt from the compacted ``<dataset>.alerts`` topics at start, then
changed only by writing a new state there first.

The topic is the truth about which alerts are open, so a restart or kill -9 neither loses an open
alert (it is read back before any agent runs) nor opens it twice (the agents consult this registry
before opening). A change is in the registry only once the broker acknowledged it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from prometheus_client import Gauge

from archlab.core import names
from archlab.core.alerts import Alert, AlertState, alert_id
from archlab.core.settings import Settings
from archlab.kafka.clients import read_to_end, topic_partitions
from archlab.observe.evaluate import Change, Measure

log = structlog.get_logger(__name__)

ALERTS_OPEN = Gauge("lab_alerts_open", "Open alerts, by dataset and objective", ["dataset", "objective"])

Send = Callable[[str, Alert], Awaitable[None]]
"""Writes one alert state to a topic and returns once the broker acknowledged it."""


async def latest_alerts(settings: Settings, datasets: list[str]) -> list[Alert]:
    """The latest state of every alert on the datasets' alerts topics (unparsable records skipped)."""
    latest: dict[str, Alert] = {}
    for dataset in datasets:
        async for records in read_to_end(settings, await topic_partitions(settings, names.alerts_topic(dataset))):
            for record in records:
                try:
                    alert = Alert.from_json(record.value)
                except ValueError:
                    log.warning("unreadable alert record skipped", topic=record.topic, offset=record.offset)
                    continue
                latest[alert.alert_id] = alert
    return list(latest.values())


class OpenAlerts:
    """Which alert is open per (dataset, objective), and the one way to open or resolve one."""

    def __init__(self, send: Send, latest: list[Alert]) -> None:
        self._send = send
        self._open: dict[tuple[str, str], Alert] = {}
        for alert in sorted(latest, key=lambda a: a.opened_at):
            if alert.state is AlertState.OPEN:
                self._open[(alert.dataset, alert.objective)] = alert
        for (dataset, objective) in self._open:
            ALERTS_OPEN.labels(dataset, objective).set(1)

    def is_open(self, dataset: str, objective: str) -> bool:
        return (dataset, objective) in self._open

    def open_alerts(self) -> list[Alert]:
        return list(self._open.values())

    async def apply(self, dataset: str, measure: Measure, change: Change, now: float) -> Alert | None:
        """Write the change :func:`~archlab.observe.evaluate.step` decided; returns the new state."""
        at = datetime.fromtimestamp(now, UTC)
        key = (dataset, measure.objective)
        if change.opens:
            alert = Alert(
                alert_id=alert_id(dataset, measure.objective, datetime.fromtimestamp(change.breach_started, UTC)),
                dataset=dataset, objective=measure.objective, state=AlertState.OPEN, opened_at=at, updated_at=at,
                value=measure.value, threshold=measure.threshold, unit=measure.unit, message=measure.message)
        else:
            current = self._open.get(key)
            if current is None:
                return None
            alert = current.model_copy(update={
                "state": AlertState.RESOLVED, "resolved_at": at, "updated_at": at, "value": measure.value,
                "message": f"resolved: {measure.message}"})
        await self._send(names.alerts_topic(dataset), alert)
        if change.opens:
            self._open[key] = alert
        else:
            del self._open[key]
        ALERTS_OPEN.labels(dataset, measure.objective).set(1 if change.opens else 0)
        log.info("alert " + alert.state.value, alert_id=alert.alert_id, value=alert.value, threshold=alert.threshold)
        return alert
