"""Pipeline health, sampled in the background so that ``GET /v1/pipeline`` answers at once.

Every ``LAB_API_PIPELINE_POLL_S`` the monitor asks the broker for each consumer group that has
committed offsets on a dataset topic (lag = end offset - committed offset, events/s = how fast
the committed offsets moved since the previous sample), for each topic's end offsets, and reads
each lake table's version, last commit and size from its Delta log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import TopicPartition
from deltalake import DeltaTable

from archlab.contract import Contract
from archlab.core import names
from archlab.core.names import TopicKind
from archlab.kafka.lag import LagProbe, caught_up, lag_of
from archlab.lake.tables import Tables, TableStats
from archlab.serving.api.settings import ApiSettings

log = structlog.get_logger("api.pipeline")

EMPTY_PIPELINE: dict[str, Any] = {"sampled_at": None, "health": "unknown", "services": [], "topics": [], "lake": []}
"""The report before the first sample."""


#: The topics whose consumers and ends the monitor samples.
MONITORED_KINDS = (TopicKind.RAW, TopicKind.SILVER, TopicKind.QUARANTINE, TopicKind.DQ, TopicKind.GOLD,
                   TopicKind.GOLD_SHUFFLE)


def service_of(group: str, prefixes: list[str]) -> str:
    """The service a consumer group belongs to: the longest configured prefix it starts with."""
    matches = [p for p in prefixes if group == p or group.startswith(p)]
    return max(matches, key=len) if matches else group


def health_of(is_caught_up: bool, rate: float | None) -> str:
    """``ok`` has read everything (``archlab.kafka.lag.caught_up``) or is moving; ``stalled`` has lag
    and did not move since the previous sample (its service is down or stuck); ``unknown`` until
    there are two samples."""
    if is_caught_up:
        return "ok"
    if rate is None:
        return "unknown"
    return "ok" if rate > 0 else "stalled"


@dataclass
class _Previous:
    at: float
    committed: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) -> sum of offsets
    ends: dict[str, int] = field(default_factory=dict)  # topic -> sum of end offsets


class PipelineMonitor:
    """Samples consumer groups, topics and lake tables; ``latest`` is the newest report."""

    def __init__(self, settings: ApiSettings, tables: Tables, contracts: dict[str, Contract]) -> None:
        self._settings = settings
        self._tables = tables
        self._table_paths = [
            (dataset, layer, path) for dataset, contract in contracts.items() for layer in names.LAYERS
            for path in ([names.table_path(layer, dataset, a.name) for a in contract.aggregates] if layer == "gold"
                         else [names.table_path(layer, dataset)])
        ]
        self._prefixes = settings.api_service_groups
        self._topics = {names.topic(d, kind) for d in settings.datasets for kind in MONITORED_KINDS}
        self._previous: _Previous | None = None
        self._handles: dict[str, DeltaTable] = {}
        self._stats: dict[str, TableStats | None] = {}
        self.latest: dict[str, Any] = EMPTY_PIPELINE

    async def run(self) -> None:
        async with LagProbe(self._settings) as probe:
            while True:
                try:
                    self.latest = await self._sample(probe)
                except Exception as exc:  # a broker or S3 hiccup: report it, keep the last sample, retry
                    log.warning("pipeline sample failed", error=repr(exc))
                    self.latest = {**self.latest, "health": "unknown"}
                await asyncio.sleep(self._settings.api_pipeline_poll_s)

    async def _sample(self, probe: LagProbe) -> dict[str, Any]:
        now = time.monotonic()
        ends_by_tp = await probe.end_offsets(self._topics)
        ends: dict[str, int] = {}
        for tp, end in ends_by_tp.items():
            ends[tp.topic] = ends.get(tp.topic, 0) + end
        groups = await self._groups(probe)
        previous = self._previous
        elapsed = now - previous.at if previous else 0.0
        committed_now: dict[tuple[str, str], int] = {}
        services: dict[str, list[dict[str, Any]]] = {}
        for group, offsets in sorted(groups.items()):
            lags = lag_of({tp: ends_by_tp.get(tp, 0) for tp in offsets}, offsets)
            topics = []
            for topic in sorted({tp.topic for tp in offsets}):
                tps = [tp for tp in offsets if tp.topic == topic]
                committed = sum(offsets[tp] for tp in tps)
                lag = sum(lags[tp] for tp in tps)
                committed_now[(group, topic)] = committed
                before = previous.committed.get((group, topic)) if previous else None
                rate = round((committed - before) / elapsed, 1) if before is not None and elapsed > 0 else None
                topics.append({"topic": topic, "layer": names.kind_of(topic).value, "committed": committed, "lag": lag,
                               "events_per_s": rate})
            lag = sum(t["lag"] for t in topics)
            rates = [t["events_per_s"] for t in topics if t["events_per_s"] is not None]
            rate = round(sum(rates), 1) if rates else None
            services.setdefault(service_of(group, self._prefixes), []).append({
                "group": group, "lag": lag, "events_per_s": rate, "health": health_of(caught_up(lags), rate), "topics": topics,
            })
        topic_rows = []
        for topic in sorted(ends):
            before = previous.ends.get(topic) if previous else None
            rate = round((ends[topic] - before) / elapsed, 1) if before is not None and elapsed > 0 else None
            dataset, kind = names.parse_topic(topic)
            topic_rows.append({"topic": topic, "dataset": dataset, "layer": kind.value,
                               "end_offset": ends[topic], "events_per_s": rate})
        self._previous = _Previous(now, committed_now, ends)
        lake = await asyncio.to_thread(self._lake_tables)
        service_rows = [{"service": name, "health": _worst(g["health"] for g in rows), "groups": rows}
                        for name, rows in sorted(services.items())]
        return {
            "sampled_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "health": _worst(s["health"] for s in service_rows) if service_rows else "unknown",
            "services": service_rows, "topics": topic_rows, "lake": lake,
        }

    async def _groups(self, probe: LagProbe) -> dict[str, dict[TopicPartition, int]]:
        """Groups that committed offsets on a dataset topic, with their committed offset per partition.

        (Group membership is not asked: aiokafka's DescribeGroups fails to decode some of Kafka 4's
        answers, so health is told by lag and progress alone.)"""
        found: dict[str, dict[TopicPartition, int]] = {}
        for group in await probe.groups():
            if mine := await probe.committed(group, self._topics):
                found[group] = mine
        return found

    def _lake_tables(self) -> list[dict[str, Any]]:
        """Per table of every dataset (gold: one per aggregate): version, last commit and size, from its log."""
        rows = []
        for dataset, layer, path in self._table_paths:
            stats = self._table_stats(path) or TableStats(path, -1, 0, 0, 0, None)
            rows.append({"dataset": dataset, "layer": layer, "table": path,
                         "version": stats.version if stats.version >= 0 else None,
                         "last_commit": None if stats.last_commit is None else
                         stats.last_commit.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                         "files": stats.files, "rows": stats.rows, "bytes": stats.bytes})
        return rows

    def _table_stats(self, path: str) -> TableStats | None:
        """A table's stats, read anew only when its version moved: its handle is kept and brought up to
        date (the log's new commits), where opening it afresh would read the log from its last checkpoint."""
        handle = self._handles.get(path)
        if handle is None:
            handle = self._tables.open(path)
            if handle is None:
                return None
            self._handles[path] = handle
        else:
            handle.update_incremental()
        held = self._stats.get(path)
        if held is None or held.version != handle.version():
            held = self._stats[path] = self._tables.stats(path, handle)
        return held


_ORDER = ("stalled", "unknown", "ok")


def _worst(healths: Any) -> str:
    values = list(healths)
    return min(values, key=_ORDER.index) if values else "unknown"
