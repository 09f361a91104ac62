"""The observer as a faust-streaming app: two agents, a timer and three tables.

* The **dq agent** reads every dataset's ``<dataset>.dq`` and folds the quarantine and lateness counts
  into rate windows, one per dataset and dq partition (table ``quality``), by the records' arrival time.
* The **sampler** (a faust timer) asks the broker, every ``LAB_OBSERVER_SAMPLE_S``, for the end offsets
  of ``<dataset>.raw`` and the committed offsets of the watched consumer groups, and writes one sample
  per dataset to ``<dataset>.health`` (faust tables may only be written while an agent handles a record,
  so the timer writes a topic, and the health agent keeps the state).
* The **health agent** folds each sample into the dataset's health (table ``health``), measures every
  enabled objective at the sample's time, and steps each objective's pending change (table
  ``pending``); a change due is written through :class:`~archlab.observe.alerts.OpenAlerts`.

The tables live in memory and are restored from their changelog topics (faust's own) on start. Faust
processes at least once: a record handled again after a crash adds its counts to a rate window twice,
which shifts a rate for one window at most; a health sample handled again is ignored (older than the
state), and an alert change decided again is a no-op, because the open alerts come from the alerts
topic itself. The dq topic is written in transactions; faust reads it uncommitted, so a batch silver
aborted and redid counts twice, again for one window at most.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faust
import structlog
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from prometheus_client import Counter

from archlab.contract import Contract
from archlab.core import names
from archlab.core.settings import ObserverSettings
from archlab.kafka.lag import LagProbe, caught_up, lag_of
from archlab.observe.alerts import OpenAlerts
from archlab.observe.evaluate import measures, step
from archlab.observe.signals import (
    BadRecord,
    GroupSample,
    HealthSample,
    carries_rates,
    fold_dq,
    fold_health,
    parse_dq,
    stalled_since,
)
from archlab.observe.webhook import WebhookSender

log = structlog.get_logger(__name__)

SKIPPED = Counter("lab_observer_skipped_total", "Records the observer could not use and skipped, by reason", ["reason"])
SAMPLE_FAILURES = Counter("lab_observer_sample_failures_total", "Health samples that failed (retried next time)")
NO_WINDOW_S = 60.0
"""Window kept for a rate whose objective is off (its counts are never read)."""


class GapSafeConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer, with the one fix its commits need on transactional topics.

    Every transaction leaves a commit marker in each partition it wrote: an offset no record is
    delivered for. faust 0.15 fills such a gap with the acked offsets it commits through, but the gap
    it records ends *at* the next record's offset, which is then acked a second time; the duplicate
    stops each commit there, so a partition's commit moved one transaction per commit interval and the
    observer fell further behind the dq topics the longer it ran (faust-streaming/faust#606,
    robinhood/faust#625). The gap is the offsets before that record."""

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        await super()._add_gap(tp, offset_from, offset_to - 1)


def build_app(settings: ObserverSettings, contracts: dict[str, Contract], alerts: OpenAlerts,
              webhook: WebhookSender | None, probe: LagProbe, datadir: Path) -> faust.App:
    """The faust app, configured but not started (``await app.start()`` runs it in the current loop)."""
    for noisy in ("faust", "mode", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = faust.App(
        names.group(settings.observer_group),
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.topic_partitions,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=f"observer-{settings.instance_id}",  # a restarted instance takes its place at once
        broker_session_timeout=30.0,
        # An agent that raises stops the app (run.py then fails the process, and its supervisor starts it
        # again from the committed offsets, with fresh metadata). faust's default restarts the agent alone,
        # in a loop nobody sees while the process looks healthy: a table write that always failed kept the
        # health agent crashing, and no alert resolved.
        agent_supervisor="mode.CrashingSupervisor",
        key_serializer="json",  # of the tables (the topics read and write raw bytes)
        value_serializer="json",
    )
    app.transport.Consumer = GapSafeConsumer
    datasets = list(contracts)
    quality = app.Table("quality", partitions=settings.topic_partitions)
    health = app.Table("health", partitions=settings.topic_partitions)
    pending = app.Table("pending", partitions=settings.topic_partitions)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    dq_topics = app.topic(*(names.dq_topic(d) for d in datasets), **raw)
    health_topics = app.topic(*(names.health_topic(d) for d in datasets), **raw)
    send_topics = {d: app.topic(names.health_topic(d), **raw) for d in datasets}

    def windows(dataset: str) -> tuple[float, float]:
        objectives = contracts[dataset].objectives
        return tuple(objective.over.total_seconds() if objective else NO_WINDOW_S  # type: ignore[return-value]
                     for objective in (objectives.quarantine_rate, objectives.late_rate))

    @app.agent(dq_topics)
    async def quality_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            if not carries_rates(message.key):
                continue
            dataset = names.dataset_of(message.topic)
            try:
                row = parse_dq(event.value)
            except BadRecord as bad:
                SKIPPED.labels(bad.reason).inc()
                log.warning("dq record skipped", reason=bad.reason, topic=message.topic, offset=message.offset)
                continue
            key = f"{dataset}:{message.partition}"
            folded = fold_dq(quality.get(key), row, message.timestamp, *windows(dataset))
            if folded is not None:
                quality[key] = folded

    @app.agent(health_topics)
    async def health_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                sample = HealthSample.model_validate_json(event.value)
            except ValueError:
                SKIPPED.labels("bad_sample").inc()
                continue
            folded = fold_health(health.get(sample.dataset), sample)
            if folded is None or sample.dataset not in contracts:
                continue
            health[sample.dataset] = folded
            await evaluate(sample.dataset, folded, sample.at)

    async def evaluate(dataset: str, state: dict, now: float) -> None:
        partitions = range(settings.topic_partitions)
        windows_of = [quality.get(f"{dataset}:{p}") or {"quarantine": [], "late": []} for p in partitions]
        found = measures(dataset, contracts[dataset].objectives, now, last_arrival=state["last_arrival"],
                         ends=state["ends"], stalled_since=stalled_since(state),
                         quarantine=[w["quarantine"] for w in windows_of], late=[w["late"] for w in windows_of])
        for objective, measure in found.items():
            key = f"{dataset}/{objective}"
            before = pending.get(key)
            after, change = step(alerts.is_open(dataset, objective), before, measure, now, settings.observer_settle_s)
            if after != before:
                pending[key] = after
            if change is not None and measure is not None:
                alert = await alerts.apply(dataset, measure, change, now)
                if alert is not None and webhook is not None:
                    webhook.enqueue(alert)

    @app.timer(settings.observer_sample_s)
    async def sampler() -> None:
        try:
            for sample in await take_samples(probe, settings, datasets):
                await send_topics[sample.dataset].send(key=sample.dataset.encode(), value=sample.model_dump_json().encode())
        except Exception as exc:  # a broker hiccup: skip this sample (an exception would stop faust's timer)
            SAMPLE_FAILURES.inc()
            log.warning("health sample failed", error=repr(exc))

    return app


async def take_samples(probe: LagProbe, settings: ObserverSettings, datasets: list[str]) -> list[HealthSample]:
    """One health sample per dataset: raw's end offset, and per watched group that committed on the
    dataset's topics, its committed sum and whether records wait for it."""
    now = time.time()
    watched = [names.topic(d, kind) for d in datasets for kind in (names.TopicKind.RAW, names.TopicKind.SILVER)]
    ends = await probe.end_offsets(watched)
    groups = [g for g in await probe.groups() if g.startswith(tuple(settings.observer_groups))]
    committed = {group: await probe.committed(group, watched) for group in groups}
    samples = []
    for dataset in datasets:
        mine = {names.raw_topic(dataset), names.silver_topic(dataset)}
        raw_end = sum(end for tp, end in ends.items() if tp.topic == names.raw_topic(dataset))
        group_samples = {}
        for group, offsets in committed.items():
            offsets = {tp: offset for tp, offset in offsets.items() if tp.topic in mine}
            if offsets:
                lags = lag_of({tp: ends.get(tp, 0) for tp in offsets}, offsets)
                group_samples[group] = GroupSample(committed=sum(offsets.values()), waiting=not caught_up(lags))
        samples.append(HealthSample(dataset=dataset, at=now, raw_end=raw_end, groups=group_samples))
    return samples
