"""Follows every dataset's gold topic so that an update is served within moments, not after the
next lake flush: each record goes into the dataset's :class:`GoldView` and to the open SSE streams.

No consumer group: every API instance reads every partition itself and commits nothing. On start it
goes back ``LAB_API_LIVE_LOOKBACK_S`` on the topic, which covers what the lake may not hold yet.
:class:`TopicFollower` and :class:`Hub` are the mechanism, shared with the alerts follower (``alerts.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from aiokafka import TopicPartition
from prometheus_client import Gauge

from archlab.core import names
from archlab.kafka.clients import make_consumer, topic_partitions
from archlab.serving.api.settings import ApiSettings
from archlab.serving.api.store import GoldView

log = structlog.get_logger("api.live")

LIVE_DELAY = Gauge("lab_api_live_delay_seconds", "Age of the newest gold update when it was read", ["dataset"])
SUBSCRIBERS = Gauge("lab_api_stream_subscribers", "Open Server-Sent Event streams")
QUEUE_SIZE = 1000
"""Updates buffered per stream; a client that falls this far behind loses the oldest ones."""


def item_of(row: dict[str, Any], group_by: list[str], measures: list[str]) -> dict[str, Any]:
    """A gold topic value in the shape the aggregates endpoint returns a window."""
    return {
        "window_start": row["window_start"], "window_end": row["window_end"],
        "dimensions": {d: row.get(d) for d in group_by},
        "measures": {m: row.get(m) for m in measures},
        "events": row.get("events"), "late_events": row.get("late_events"), "final": row.get("final"),
        "revision": row.get("revision"), "watermark": row.get("watermark"),
    }


class Subscription:
    """One open stream's queue of updates, registered with the hub from its creation on."""

    def __init__(self, hub: Hub, key: tuple[str, ...]) -> None:
        self._hub = hub
        self._key = key
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)

    async def updates(self) -> AsyncIterator[dict[str, Any]]:
        """Every update from the subscription on, until the hub closes."""
        while (row := await self.queue.get()) is not None:
            yield row

    def close(self) -> None:
        self._hub.drop(self._key, self)


class Hub:
    """Fans updates out to the streams that want them, by key: gold updates by (dataset, aggregate)."""

    def __init__(self) -> None:
        self._subscriptions: dict[tuple[str, ...], set[Subscription]] = {}

    def subscribe(self, *key: str) -> Subscription:
        subscription = Subscription(self, key)
        self._subscriptions.setdefault(key, set()).add(subscription)
        SUBSCRIBERS.inc()
        return subscription

    def drop(self, key: tuple[str, ...], subscription: Subscription) -> None:
        if subscription in self._subscriptions.get(key, set()):
            self._subscriptions[key].discard(subscription)
            SUBSCRIBERS.dec()

    def publish(self, dataset: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.send((dataset, row.get("aggregate", "")), row)

    def send(self, key: tuple[str, ...], item: dict[str, Any]) -> None:
        for subscription in self._subscriptions.get(key, ()):
            _put(subscription.queue, item)

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                _put(subscription.queue, None)


def _put(queue: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any] | None) -> None:
    """Enqueue without blocking: a full queue drops its oldest update."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class TopicFollower:
    """Follows one topic per dataset without a consumer group (every API instance reads every partition
    and commits nothing) and hands each partition's records to ``_take``. Subclasses say where to start
    (``_seek``: the beginning, by default) and what a record means. ``ready`` is set once positioned,
    ``caught_up`` once it has read what the topics held when it started."""

    def __init__(self, settings: ApiSettings, topics: dict[str, str]) -> None:
        self._settings = settings
        self._topics = topics  # dataset -> its topic
        self.ready = asyncio.Event()
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        # A fetch returns as soon as a record is committed; the wait only spaces out idle fetches.
        consumer = make_consumer(self._settings, group_id=None, isolation_level="read_committed",
                                 fetch_max_wait_ms=500)
        await consumer.start()
        try:
            partitions: list[TopicPartition] = []
            for topic in self._topics.values():
                partitions += await topic_partitions(self._settings, topic)
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await self._seek(consumer, partitions, ends)
            self.ready.set()
            log.info("following topics", topics=sorted(self._topics.values()), partitions=len(partitions))
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, records in batches.items():
                    self._take(names.dataset_of(tp.topic), records)
                if not self.caught_up.is_set() and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _seek(self, consumer: Any, partitions: list[TopicPartition], ends: dict[TopicPartition, int]) -> None:
        await consumer.seek_to_beginning(*partitions)

    def _take(self, dataset: str, records: list[Any]) -> None:
        raise NotImplementedError


class GoldFollower(TopicFollower):
    """Reads the gold topics of every dataset and feeds the views and the hub."""

    def __init__(self, settings: ApiSettings, views: dict[str, GoldView], hub: Hub) -> None:
        super().__init__(settings, {dataset: names.gold_topic(dataset) for dataset in views})
        self._views = views
        self._hub = hub

    async def _seek(self, consumer: Any, partitions: list[TopicPartition], ends: dict[TopicPartition, int]) -> None:
        """``LAB_API_LIVE_LOOKBACK_S`` back: what the lake may not hold yet."""
        since = int((time.time() - self._settings.api_live_lookback_s) * 1000)
        offsets = await consumer.offsets_for_times({tp: since for tp in partitions})
        for tp in partitions:
            found = offsets.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])

    def _take(self, dataset: str, records: list[Any]) -> None:
        rows = []
        for record in records:
            if record.value is None:  # a tombstone: compaction's business, not a window update
                continue
            try:
                row = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                log.warning("gold record is not JSON", topic=record.topic, offset=record.offset)
                continue
            if isinstance(row, dict) and "aggregate" in row and "window_start" in row:
                rows.append(row)
        if not rows:
            return
        LIVE_DELAY.labels(dataset).set(max(0.0, time.time() - records[-1].timestamp / 1000))
        self._views[dataset].apply(rows)
        self._hub.publish(dataset, rows)
