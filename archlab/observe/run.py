"""Running the observer: open alerts read back, the webhook resumed, then the faust app, until stop.

Order matters for reliability (item 5 of issue #15): the alerts topics are read to their end before
any agent runs, so an alert open before a restart or kill -9 is known open again (never opened a
second time, never lost), and the webhook is resumed from its delivery log before new changes arrive.
"""

from __future__ import annotations

import asyncio
import contextlib

import faust
import structlog
from aiokafka.admin import NewTopic

from archlab.contract import Contract
from archlab.core.alerts import Alert
from archlab.core.errors import UserError
from archlab.core.settings import ObserverSettings
from archlab.kafka.clients import make_producer, topic_partitions
from archlab.kafka.lag import LagProbe
from archlab.kafka.topics import changelog_topic, create_topics
from archlab.observe.alerts import OpenAlerts, latest_alerts
from archlab.observe.app import build_app
from archlab.observe.webhook import WebhookSender

log = structlog.get_logger(__name__)


class ObserverFailed(RuntimeError):
    """The faust app stopped on its own (an agent or its consumer crashed)."""


class StateTopicMismatch(UserError):
    """A changelog of the observer's tables was made with another partition count than its tables have."""

    label = "observer error"


async def observe(settings: ObserverSettings, contracts: dict[str, Contract], stop: asyncio.Event) -> None:
    """Watch the datasets' objectives until ``stop``; ObserverFailed when faust stops by itself."""
    datasets = list(contracts)
    settings.observer_state_dir.mkdir(parents=True, exist_ok=True)
    latest = await latest_alerts(settings, datasets)
    async with contextlib.AsyncExitStack() as resources:
        producer = make_producer(settings, linger_ms=0)
        await producer.start()
        resources.push_async_callback(producer.stop)
        probe = await resources.enter_async_context(LagProbe(settings))

        async def send(topic: str, alert: Alert) -> None:
            await producer.send_and_wait(topic, alert.to_json(), key=alert.key)

        webhook = None
        if settings.alert_webhook_url:
            webhook = WebhookSender(settings.alert_webhook_url, settings.observer_state_dir / "webhook-delivered.log",
                                    settings.alert_webhook_queue, stop)
            webhook.resume(latest)
            posting = asyncio.create_task(webhook.run())
            resources.push_async_callback(asyncio.gather, posting, return_exceptions=True)
        resources.callback(stop.set)  # runs before the wait above: the webhook's task ends with it
        alerts = OpenAlerts(send, latest)
        log.info("alerts read back", open=len(alerts.open_alerts()), known=len(latest))
        app = build_app(settings, contracts, alerts, webhook, probe, settings.observer_state_dir / "faust")
        changelogs = table_changelogs(app)
        await create_topics(settings, changelogs)
        await check_partitions(settings, changelogs)
        resources.push_async_callback(stop_app, app)
        await app.start()
        stopped = asyncio.ensure_future(app.wait_until_stopped())
        await asyncio.wait([stopped, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done() and not stop.is_set():
            reason = app.crash_reason
            raise ObserverFailed(f"the faust app stopped by itself: {reason!r}") from reason
        stopped.cancel()


async def stop_app(app: faust.App) -> None:
    """Stop the app; after a crash its consumer thread is gone, and faust's last offset commit, cancelled
    with it, ends the stop early with CancelledError: that one is not ours to pass on (the crash is)."""
    try:
        await app.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if app.crash_reason is None or (task is not None and task.cancelling()):
            raise
        log.warning("the crashed faust app's last commit was cancelled", reason=repr(app.crash_reason))


def table_changelogs(app: faust.App) -> list[NewTopic]:
    """The changelog topic of each of the app's tables. They are made here, visible in the metadata before
    faust starts: faust declares them itself at start, and on a fresh broker its clients could keep the
    metadata of a topic not ready yet (0 partitions); the first write to that table then crashed the agent
    with PartitionsMismatch, again at every restart of it, and no alert resolved."""
    return [changelog_topic(table.changelog_topic.get_topic_name(), table.partitions or app.conf.topic_partitions)
            for table in app.tables.values()]


async def check_partitions(settings: ObserverSettings, changelogs: list[NewTopic]) -> None:
    """Each changelog has the partitions its table needs. One left by an observer that ran with another
    ``LAB_TOPIC_PARTITIONS`` keeps its count, and faust would fail at the first write to the table: say
    what to do instead."""
    for wanted in changelogs:
        found = len(await topic_partitions(settings, wanted.name))
        if found != wanted.num_partitions:
            raise StateTopicMismatch(
                f"the observer's state topic {wanted.name} has {found} partitions, its table needs "
                f"{wanted.num_partitions} (LAB_TOPIC_PARTITIONS); delete that topic (the observer rebuilds "
                f"its state, its rate windows start empty) or run with LAB_TOPIC_PARTITIONS={found}")
