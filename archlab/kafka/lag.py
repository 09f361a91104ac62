"""Consumer lag: how far a consumer group's committed offsets are behind its topics' end offsets.

The one rule every reader of lag must apply is written here once. A topic written in Kafka
transactions ends each transaction with a commit *marker*: it takes an offset but is never handed
to a consumer, so a group that has read everything commits the offset of that last marker, one
below the end offset. On such a partition a lag of one is caught up; on ``<dataset>.raw``, sent
without transactions, only a lag of zero is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from archlab.core.names import TopicKind, kind_of
from archlab.core.settings import Settings
from archlab.kafka.clients import make_consumer

Offsets = dict[TopicPartition, int]


def written_in_transactions(topic: str) -> bool:
    """Every pipeline topic but raw is written in transactions (a foreign topic is assumed to be)."""
    try:
        return kind_of(topic) is not TopicKind.RAW
    except ValueError:
        return True


def marker_slack(tp: TopicPartition, transactional: bool | None = None) -> int:
    """How many offsets at a partition's end a caught-up group never commits past: the final
    commit marker of a transactional topic (``transactional=None`` decides by the topic's name)."""
    if transactional is None:
        transactional = written_in_transactions(tp.topic)
    return 1 if transactional else 0


def lag_of(ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int]) -> Offsets:
    """Per partition of ``ends``: end offset minus committed offset (nothing committed counts as 0)."""
    return {tp: max(0, end - max(committed.get(tp, 0), 0)) for tp, end in ends.items()}


def caught_up(lag: Mapping[TopicPartition, int], transactional: bool | None = None) -> bool:
    """True when every partition's lag is at most its commit-marker slack (see the module docstring)."""
    return all(behind <= marker_slack(tp, transactional) for tp, behind in lag.items())


def settled_offsets(ends: Mapping[TopicPartition, int], transactional: bool | None = None) -> Offsets:
    """The offsets a group that has read up to ``ends`` commits (the end, less a final commit marker)."""
    return {tp: max(0, end - marker_slack(tp, transactional)) for tp, end in ends.items()}


class LagProbe:
    """One admin client and one group-less consumer, for sampling end and committed offsets
    repeatedly (the API's pipeline monitor, ``lab status``, benchmarks, tests)."""

    def __init__(self, settings: Settings) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
        self._consumer: AIOKafkaConsumer = make_consumer(settings, group_id=None)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> LagProbe:
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        """Every partition of the topics that exist (a missing topic has none); cached per topic,
        since the pipeline never adds partitions to an existing topic."""
        wanted = sorted(set(topics) - set(self._partitions))
        if wanted:
            for described in await self._admin.describe_topics(wanted):
                if not described.get("error_code") and described.get("partitions"):
                    self._partitions[described["topic"]] = sorted(
                        TopicPartition(described["topic"], p["partition"]) for p in described["partitions"])
        return [tp for topic in sorted(set(topics)) for tp in self._partitions.get(topic, ())]

    async def end_offsets(self, topics: Iterable[str]) -> Offsets:
        """The offset after the last record (or marker) of every partition of the topics."""
        partitions = await self.partitions(topics)
        return await self._consumer.end_offsets(partitions) if partitions else {}

    async def groups(self) -> list[str]:
        """Every consumer group the broker knows."""
        return sorted(group for group, _protocol in await self._admin.list_consumer_groups())

    async def committed(self, group: str, topics: Iterable[str] | None = None) -> Offsets:
        """The group's committed offset per partition (of ``topics`` if given); none committed yet: absent."""
        only = None if topics is None else set(topics)
        offsets = await self._admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()
                if meta.offset >= 0 and (only is None or tp.topic in only)}

    async def wait_committed(self, group: str, targets: Mapping[TopicPartition, int], poll_s: float = 0.05,
                             timeout_s: float | None = None) -> float:
        """Until ``group`` has committed at least ``targets`` (e.g. ``settled_offsets`` of end offsets
        taken earlier); returns that moment (``time.perf_counter``). TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    committed = await self.committed(group)
                except KafkaError as exc:  # e.g. the group's coordinator is not elected yet: ask again
                    if not exc.retriable:
                        raise
                    committed = {}
                if all(committed.get(tp, 0) >= target for tp, target in targets.items()):
                    return time.perf_counter()
                await asyncio.sleep(poll_s)


async def wait_caught_up(settings: Settings, group: str, topics: Iterable[str], poll_s: float = 0.1,
                         timeout_s: float | None = None) -> None:
    """Until ``group`` has committed everything in ``topics`` as they end now (commit markers allowed for)."""
    async with LagProbe(settings) as probe:
        targets = settled_offsets(await probe.end_offsets(topics))
        await probe.wait_committed(group, targets, poll_s, timeout_s)
