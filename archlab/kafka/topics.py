"""Create every dataset's topics, with their partitions and configs.

The broker runs with ``auto.create.topics.enable=false`` (a typo in a topic name must fail, not
create a new topic) and faust does not create source/sink topics, so they are made here, once,
before the services start. Everything is idempotent: running it against a ready stack is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from archlab.core.settings import Settings

log = logging.getLogger(__name__)

#: Topic layers of a dataset: ``<dataset>.<layer>``.
TOPIC_LAYERS = ("raw", "silver", "quarantine", "gold", "silver-dedup", "dq", "gold-shuffle", "gold-state")
#: Per-layer topic configs. Raw must take whatever arrives (oversized payloads included, up to
#: 4 MiB) and quarantine carries such payloads on; gold holds the latest aggregate per key, so
#: only the newest record per key needs to be kept.
MAX_MESSAGE_BYTES = str(4 * 1024 * 1024)
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "raw": {"max.message.bytes": MAX_MESSAGE_BYTES},
    "quarantine": {"max.message.bytes": MAX_MESSAGE_BYTES},
    "gold": {"cleanup.policy": "compact"},
    # silver_refiner's de-duplication state (latest entry per key) and its quality counts.
    "silver-dedup": {"cleanup.policy": "compact"},
    # gold_aggregator's window state: deltas, tombstoned once a window is forgotten.
    "gold-state": {"cleanup.policy": "compact"},
}


def topic_name(dataset: str, layer: str) -> str:
    """The topic of one dataset layer, e.g. ``orders.raw``."""
    return f"{dataset}.{layer}"


def dataset_topics(settings: Settings, datasets: Iterable[str] | None = None) -> list[NewTopic]:
    """The topics the pipeline needs, with their partitions and configs."""
    return [
        NewTopic(
            name=topic_name(dataset, layer),
            num_partitions=settings.topic_partitions,
            replication_factor=1,
            topic_configs=TOPIC_CONFIGS.get(layer, {}),
        )
        for dataset in (settings.datasets if datasets is None else datasets)
        for layer in TOPIC_LAYERS
    ]


async def ensure_topics(settings: Settings, datasets: Iterable[str] | None = None) -> list[str]:
    """Create the dataset topics that do not exist yet; return all their names.

    Waits until every topic is visible in the broker's metadata, so that a producer started right
    after this call does not race the topic creation.
    """
    wanted = dataset_topics(settings, datasets)
    names = [topic.name for topic in wanted]
    if not wanted:
        return names
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        response = await admin.create_topics(wanted)
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code == 0:
                log.info("created topic %s", entry["topic"])
            elif code != TopicAlreadyExistsError.errno:
                error = for_code(code)
                raise error(f"creating topic {entry['topic']}: {entry.get('error_message') or error.__name__}")
        await _wait_visible(admin, names)
        await _warn_on_partition_mismatch(admin, names, settings.topic_partitions)
    finally:
        await admin.close()
    return names


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while missing := set(names) - set(await admin.list_topics()):
        if loop.time() > deadline:
            raise TimeoutError(f"topics not visible in the metadata after {timeout:.0f}s: {sorted(missing)}")
        await asyncio.sleep(0.2)


async def _warn_on_partition_mismatch(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> None:
    """An existing topic keeps its partition count; faust fails later if it differs, so say so now."""
    for topic in await admin.describe_topics(names):
        count = len(topic.get("partitions") or [])
        if count != partitions:
            log.warning("topic %s has %d partitions, settings say %d", topic["topic"], count, partitions)
