"""Create every dataset's topics, with their partitions and configs.

The broker runs with ``auto.create.topics.enable=false`` (a typo in a topic name must fail, not
create a new topic), so topics are made here, once, before the services start; scratch topics of
benchmarks and tests go through ``create_topics`` too. Everything is idempotent: running it
against a ready stack is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from archlab.core import names
from archlab.core.names import TopicKind
from archlab.core.settings import Settings

log = structlog.get_logger(__name__)

#: Per-kind topic configs (the kinds and the topic names are :mod:`archlab.core.names`'s). Raw must
#: take whatever arrives (oversized payloads included, up to 4 MiB) and quarantine carries such
#: payloads on; gold holds the latest aggregate per key, so only the newest record per key needs to be kept.
MAX_MESSAGE_BYTES = str(4 * 1024 * 1024)
TOPIC_CONFIGS: dict[TopicKind, dict[str, str]] = {
    TopicKind.RAW: {"max.message.bytes": MAX_MESSAGE_BYTES},
    TopicKind.QUARANTINE: {"max.message.bytes": MAX_MESSAGE_BYTES},
    TopicKind.GOLD: {"cleanup.policy": "compact"},
    # silver_refiner's de-duplication state (latest entry per key).
    TopicKind.SILVER_DEDUP: {"cleanup.policy": "compact"},
    # gold_aggregator's window state: deltas, tombstoned once a window is forgotten.
    TopicKind.GOLD_STATE: {"cleanup.policy": "compact"},
    # the observer's alerts: the latest state of each alert id.
    TopicKind.ALERTS: {"cleanup.policy": "compact"},
    # the observer's health samples: read within seconds of being written, worthless after an hour.
    TopicKind.HEALTH: {"retention.ms": str(3_600_000)},
}


def new_topic(name: str, partitions: int, kind: TopicKind | None = None) -> NewTopic:
    """A topic to create: ``kind``'s configs (none for a plain scratch topic), one replica."""
    return NewTopic(name=name, num_partitions=partitions, replication_factor=1,
                    topic_configs=TOPIC_CONFIGS.get(kind, {}) if kind else {})


def changelog_topic(name: str, partitions: int) -> NewTopic:
    """A state table's changelog (the observer's faust tables): the latest entry per key, one replica."""
    return NewTopic(name=name, num_partitions=partitions, replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"})


def dataset_topics(settings: Settings, datasets: Iterable[str] | None = None) -> list[NewTopic]:
    """The topics the pipeline needs, with their partitions and configs."""
    return [
        new_topic(names.topic(dataset, kind), settings.topic_partitions, kind)
        for dataset in (settings.datasets if datasets is None else datasets)
        for kind in TopicKind
    ]


async def ensure_topics(settings: Settings, datasets: Iterable[str] | None = None) -> list[str]:
    """Create the dataset topics that do not exist yet; return all their names."""
    return await create_topics(settings, dataset_topics(settings, datasets))


async def create_topics(settings: Settings, wanted: Sequence[NewTopic]) -> list[str]:
    """Create the topics that do not exist yet; return all their names.

    Waits until every topic is visible in the broker's metadata, so that a producer started right
    after this call does not race the topic creation.
    """
    topic_names = [topic.name for topic in wanted]
    if not wanted:
        return topic_names
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        response = await admin.create_topics(wanted)
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code == 0:
                log.info("created topic", topic=entry["topic"])
            elif code != TopicAlreadyExistsError.errno:
                error = for_code(code)
                raise error(f"creating topic {entry['topic']}: {entry.get('error_message') or error.__name__}")
        await _wait_visible(admin, topic_names)
        await _warn_on_partition_mismatch(admin, {topic.name: topic.num_partitions for topic in wanted})
    finally:
        await admin.close()
    return topic_names


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while missing := set(names) - set(await admin.list_topics()):
        if loop.time() > deadline:
            raise TimeoutError(f"topics not visible in the metadata after {timeout:.0f}s: {sorted(missing)}")
        await asyncio.sleep(0.2)


async def _warn_on_partition_mismatch(admin: AIOKafkaAdminClient, partitions: dict[str, int]) -> None:
    """An existing topic keeps its partition count, which then differs from the one asked for (and
    keys land on other partitions than a fresh stack's): say so now."""
    for topic in await admin.describe_topics(list(partitions)):
        count = len(topic.get("partitions") or [])
        if count != partitions[topic["topic"]]:
            log.warning("topic has another partition count than asked", topic=topic["topic"], partitions=count,
                        asked=partitions[topic["topic"]])
