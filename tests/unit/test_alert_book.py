"""The API's alert book: one current state per alert id, open alerts first and newest first, resolved ones
bounded per dataset, and only real changes sent to the streams."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from archlab.core.alerts import Alert, AlertState, alert_id
from archlab.serving.api.alerts import EVERY_ALERT, AlertBook

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def opened(dataset: str, objective: str, at: datetime) -> Alert:
    return Alert(alert_id=alert_id(dataset, objective, at), dataset=dataset, objective=objective,
                 state=AlertState.OPEN, opened_at=at, updated_at=at, value=180.0, threshold=120.0, unit="s",
                 message=f"{dataset}: no event for 3m (objective 2m)")


def resolved(alert: Alert, at: datetime) -> Alert:
    return alert.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": at, "updated_at": at, "value": 1.0})


def test_a_resolved_state_replaces_the_open_one_of_the_same_id() -> None:
    book = AlertBook()
    alert = opened("orders", "freshness", T0)
    assert book.apply(alert)
    assert book.apply(resolved(alert, T0 + timedelta(minutes=3)))
    [only] = book.select()
    assert only.state is AlertState.RESOLVED and only.resolved_at == T0 + timedelta(minutes=3)


def test_replays_older_states_and_reopening_change_nothing() -> None:
    book = AlertBook()
    alert = opened("orders", "freshness", T0)
    closed = resolved(alert, T0 + timedelta(minutes=3))
    book.apply(alert)
    book.apply(closed)
    assert not book.apply(closed)  # the same record again (at-least-once)
    assert not book.apply(alert)  # an older state
    assert not book.apply(alert.model_copy(update={"updated_at": T0 + timedelta(minutes=5)}))  # one breach, once
    assert book.select() == [closed]


def test_open_first_then_newest_first() -> None:
    book = AlertBook()
    old_open = opened("orders", "freshness", T0)
    new_open = opened("sensors", "freshness", T0 + timedelta(minutes=10))
    early = opened("orders", "quarantine_rate", T0 - timedelta(hours=2))
    late = opened("orders", "late_rate", T0 - timedelta(hours=1))
    for alert in (old_open, early, new_open, late):
        book.apply(alert)
    early_resolved = resolved(early, T0 + timedelta(minutes=1))
    late_resolved = resolved(late, T0 + timedelta(minutes=20))
    book.apply(late_resolved)
    book.apply(early_resolved)
    assert book.select() == [new_open, old_open, late_resolved, early_resolved]
    assert book.select(dataset="orders", state=AlertState.RESOLVED) == [late_resolved, early_resolved]
    assert book.select(state=AlertState.OPEN) == [new_open, old_open]
    assert book.select(resolved_since=T0 + timedelta(minutes=10)) == [new_open, old_open, late_resolved]


def test_resolved_alerts_are_bounded_per_dataset_and_open_ones_all_kept() -> None:
    book = AlertBook(resolved_kept=3)
    for minute in range(10):
        for dataset in ("orders", "sensors"):
            alert = opened(dataset, "freshness", T0 + timedelta(minutes=minute))
            book.apply(alert)
            book.apply(resolved(alert, alert.opened_at + timedelta(seconds=30)))
    still_open = [opened("orders", f"objective{i}", T0 - timedelta(days=i)) for i in range(5)]
    for alert in still_open:
        book.apply(alert)
    orders = book.select(dataset="orders")
    assert orders[:5] == still_open
    assert [a.opened_at for a in orders[5:]] == [T0 + timedelta(minutes=m) for m in (9, 8, 7)]
    assert len(book.select(dataset="sensors")) == 3


def test_every_change_and_nothing_else_reaches_a_stream() -> None:
    async def scenario() -> list[tuple[str, str]]:
        book = AlertBook()
        subscription = book.hub.subscribe(*EVERY_ALERT)
        alert = opened("orders", "freshness", T0)
        for record in (alert, alert, resolved(alert, T0 + timedelta(minutes=1)), alert):
            book.apply(record)
        book.hub.close()
        return [(update["alert_id"], update["state"]) async for update in subscription.updates()]

    assert asyncio.run(scenario()) == [(alert_id("orders", "freshness", T0), "open"),
                                       (alert_id("orders", "freshness", T0), "resolved")]
