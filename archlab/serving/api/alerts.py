"""The alerts the API serves: every dataset's ``<dataset>.alerts`` topic, read from the beginning (it is
compacted: one current state per alert id) and then followed, kept in memory as an :class:`AlertBook`
whose changes go to the open SSE streams.

The book is bounded: every open alert, and per dataset only the newest ``LAB_API_ALERTS_RESOLVED_KEPT``
resolved ones (the alerts lake table holds the whole history).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Counter
from pydantic import ValidationError

from archlab.core import names
from archlab.core.alerts import Alert, AlertState
from archlab.serving.api.live import Hub, TopicFollower
from archlab.serving.api.settings import ApiSettings

log = structlog.get_logger("api.alert_follower")

SKIPPED = Counter("lab_api_alert_records_skipped_total", "Alert records the API could not read", ["dataset", "reason"])
EVERY_ALERT: tuple[str, ...] = ("alerts",)
"""The hub key every alert change is sent under; a stream filters by dataset itself."""


def newest_first(alert: Alert) -> tuple[bool, float]:
    """Sort key: open alerts before resolved ones, each the newest first (opened, resp. resolved, latest)."""
    moment = alert.resolved_at if alert.state is AlertState.RESOLVED and alert.resolved_at else alert.opened_at
    return alert.state is AlertState.RESOLVED, -moment.timestamp()


class AlertBook:
    """The current state of each alert id, as the topics last said, and a hub that hears every change."""

    def __init__(self, resolved_kept: int = 200) -> None:
        self._resolved_kept = resolved_kept
        self._alerts: dict[str, Alert] = {}
        self.hub = Hub()

    def apply(self, alert: Alert) -> bool:
        """Take one record's state; False (and nothing sent) when it changes nothing a reader can see: the same
        state again (a replay, the observer's at-least-once), an older state, or an open record for an alert
        already resolved (an alert id names one breach, which cannot open again)."""
        current = self._alerts.get(alert.alert_id)
        if current is not None and (current == alert or alert.updated_at < current.updated_at
                                    or (current.state is AlertState.RESOLVED and alert.state is AlertState.OPEN)):
            return False
        self._alerts[alert.alert_id] = alert
        if alert.state is AlertState.RESOLVED:
            self._bound(alert.dataset)
        self.hub.send(EVERY_ALERT, alert.model_dump(mode="json"))
        return True

    def _bound(self, dataset: str) -> None:
        resolved = sorted((a for a in self._alerts.values()
                           if a.dataset == dataset and a.state is AlertState.RESOLVED), key=newest_first)
        for alert in resolved[self._resolved_kept:]:
            del self._alerts[alert.alert_id]

    def select(self, dataset: str | None = None, state: AlertState | None = None,
               resolved_since: datetime | None = None) -> list[Alert]:
        """Alerts of ``dataset`` (all if None) in ``state`` (both if None), resolved ones only if resolved at or
        after ``resolved_since``; open first, each newest first."""
        chosen = [a for a in self._alerts.values()
                  if (dataset is None or a.dataset == dataset) and (state is None or a.state is state)
                  and (a.state is AlertState.OPEN or resolved_since is None
                       or (a.resolved_at or a.updated_at) >= resolved_since)]
        return sorted(chosen, key=newest_first)


def document(alerts: list[Alert]) -> dict[str, Any]:
    """The answer of ``GET /v1/alerts`` (and the data of the stream's ``ready`` event)."""
    return {"open": sum(a.state is AlertState.OPEN for a in alerts), "alerts": [a.model_dump(mode="json") for a in alerts]}


class AlertFollower(TopicFollower):
    """Reads every dataset's alerts topic into the book; a record that is not an alert is counted and skipped."""

    def __init__(self, settings: ApiSettings, datasets: list[str], book: AlertBook) -> None:
        super().__init__(settings, {dataset: names.alerts_topic(dataset) for dataset in datasets})
        self._book = book

    def _take(self, dataset: str, records: list[Any]) -> None:
        for record in records:
            if record.value is None:  # a tombstone: compaction's business, not an alert state
                continue
            try:
                alert = Alert.from_json(record.value)
            except ValidationError as exc:
                SKIPPED.labels(dataset, "not an alert").inc()
                log.warning("alert record is not an alert", topic=record.topic, offset=record.offset,
                            error=exc.errors(include_url=False, include_input=False)[:3])
                continue
            if alert.dataset != dataset:
                SKIPPED.labels(dataset, "foreign dataset").inc()
                continue
            self._book.apply(alert)
