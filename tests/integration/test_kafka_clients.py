"""The shared Kafka readers against the real broker, around a transaction that is still open."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition

from archlab.core.settings import Settings
from archlab.kafka.clients import end_offsets, make_producer, read_all
from archlab.kafka.topics import create_topics, new_topic

pytestmark = pytest.mark.integration


async def test_a_read_to_the_end_waits_for_a_transaction_open_when_it_began(settings: Settings) -> None:
    """A reader that starts while a transaction is open (or committed, its markers not yet written)
    gets that transaction's records once it commits, instead of stopping at the last stable offset."""
    topic = f"clients-{uuid.uuid4().hex[:12]}"
    await create_topics(settings, [new_topic(topic, 1)])
    producer = make_producer(settings, transactional_id=f"{topic}-writer")
    await producer.start()
    try:
        await producer.begin_transaction()
        for i in range(50):
            await producer.send(topic, f"v{i}".encode(), key=b"k")
        await producer.flush()
        # The high watermark counts the open transaction's records.
        assert (await end_offsets(settings, [TopicPartition(topic, 0)]))[TopicPartition(topic, 0)] == 50

        reading = asyncio.create_task(read_all(settings, topic))
        done, _ = await asyncio.wait({reading}, timeout=3.0)
        assert not done, "the read stopped before the open transaction ended"
        await producer.commit_transaction()
        records = await asyncio.wait_for(reading, timeout=60)
    finally:
        await producer.stop()
    assert [r.value for r in records] == [f"v{i}".encode() for i in range(50)]
