"""bronze_sink against the real broker and MinIO: every raw record lands exactly once, byte for
byte, through crashes, a MinIO outage and a second instance."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote

import pytest

from archlab.core import names, sql
from archlab.core.settings import Settings
from archlab.ingest.generators import DIRTY_KINDS, DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import make_consumer
from archlab.lake.tables import Tables
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import LakeSink, RollPolicy
from archlab.streaming.readiness import metric_total
from tests.integration.conftest import (
    assert_exactly_once,
    bronze_rows,
    kill9_repeatedly,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration

EVERY_KIND = DirtyRates(**{kind: 0.03 for kind in DIRTY_KINDS} | {"oversized": 0.001})
DATA_FILE = re.compile(r"/bronze/\w+/dt=\d{4}-\d{2}-\d{2}/[^/]+\.parquet$")  # by day, no finer folders


def _sink_env(dataset: str, flush_records: int) -> dict[str, str]:
    """A bronze_sink process of its own for this test's dataset, flushing often."""
    return {"LAB_DATASETS": dataset, "LAB_BRONZE_GROUP": f"bronze-{dataset}",
            "LAB_FLUSH_RECORDS": str(flush_records), "LAB_FLUSH_INTERVAL_S": "0.5"}


async def _land_in_process(settings: Settings, tables: Tables, dataset: str, expected: int,
                           policy: RollPolicy = RollPolicy(1_000, 1 << 20, 1.0)) -> None:
    group = f"bronze-{dataset}"
    consumer = make_consumer(settings, group_id=group)
    sink = LakeSink(consumer, tables, BronzeEncoder(), group_id=group, policy=policy)
    consumer.subscribe([names.raw_topic(dataset)], listener=sink.listener)
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        await asyncio.to_thread(wait_until, lambda: len(bronze_rows(tables, dataset)) >= expected, 60, "bronze")
    finally:
        stop.set()
        await task
        await consumer.stop()


async def test_every_raw_record_lands_once_byte_identical(settings: Settings, tables: Tables, fresh_dataset: str) -> None:
    summary = await produce_synthetic(
        settings, "orders", count=8_000, rate=0, seed=7, dirty=EVERY_KIND, topic=names.raw_topic(fresh_dataset)
    )
    assert summary.sent == 8_000 and summary.failed == 0
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    assert len(sent) == 8_000

    await _land_in_process(settings, tables, fresh_dataset, len(sent))

    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)
    table = tables.open(names.table_path("bronze", fresh_dataset))
    assert table is not None and table.metadata().partition_columns == [names.DATE_PARTITION]
    files = [unquote(uri) for uri in table.file_uris()]
    assert files and all(DATA_FILE.search(f) for f in files), files[:3]
    con = sql.connect()
    tables.register(con, "bronze", names.table_path("bronze", fresh_dataset))
    injected = {
        row[0] for row in con.execute(
            "SELECT DISTINCT decode(h.value) FROM (SELECT unnest(headers) AS h FROM bronze) WHERE h.key = 'lab-injected'"
        ).fetchall()
    }
    assert injected == set(DIRTY_KINDS), f"dirty kinds landed: {sorted(injected)}"


async def test_a_flush_lands_every_partition_of_its_topic_in_one_commit(
    settings: Settings, tables: Tables, fresh_dataset: str
) -> None:
    """A flush due for one partition takes the others of its topic along: one commit (one file, one log
    entry) per interval for the table, carrying each partition's transaction, not one per partition."""
    await produce_synthetic(settings, "orders", count=2_000, rate=0, seed=4, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(fresh_dataset))
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    assert len({partition for partition, _ in sent}) == settings.topic_partitions

    await _land_in_process(settings, tables, fresh_dataset, len(sent), RollPolicy(100_000, 1 << 30, 3.0))

    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)
    table = tables.open(names.table_path("bronze", fresh_dataset))
    assert table is not None
    writes = [commit for commit in table.history() if commit["operation"] == "WRITE"]
    assert len(writes) == 1, writes
    group = f"bronze-{fresh_dataset}"
    topic = names.raw_topic(fresh_dataset)
    assert {partition: table.transaction_version(names.app_id(group, topic, partition))
            for partition in range(settings.topic_partitions)} == {
        partition: max(offset for p, offset in sent if p == partition) for partition in range(settings.topic_partitions)}


async def test_a_flush_committed_to_the_table_but_not_to_kafka_is_not_landed_again(
    settings: Settings, tables: Tables, fresh_dataset: str
) -> None:
    """A crash between the Delta commit and the Kafka offset commit: the next owner resumes after the
    table's transaction version, however far behind Kafka's committed offset is."""
    await produce_synthetic(settings, "orders", count=3_000, rate=0, seed=3, dirty=DirtyRates.clean(),
                            topic=names.raw_topic(fresh_dataset))
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    group = f"bronze-{fresh_dataset}"

    consumer = make_consumer(settings, group_id=group)
    crashing = LakeSink(consumer, tables, BronzeEncoder(), group_id=group, policy=RollPolicy(500, 1 << 20, 60))
    consumer.subscribe([names.raw_topic(fresh_dataset)], listener=crashing.listener)
    await consumer.start()

    async def never_commit(offsets: object) -> None:
        raise asyncio.CancelledError  # the process dies right after the Delta commit

    consumer.commit = never_commit  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await crashing.run(asyncio.Event())
    await consumer.stop()
    assert bronze_rows(tables, fresh_dataset), "the crashed flush should have committed to the table"

    await _land_in_process(settings, tables, fresh_dataset, len(sent))
    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)


async def test_kill9_of_bronze_sink_five_times_keeps_exactly_once(
    settings: Settings, tables: Tables, fresh_dataset: str, start_service
) -> None:
    env = _sink_env(fresh_dataset, flush_records=3000)
    producing = asyncio.create_task(
        produce_synthetic(settings, "orders", count=100_000, rate=3_000, seed=11, topic=names.raw_topic(fresh_dataset))
    )
    sink = await kill9_repeatedly(lambda: start_service("bronze_sink", **env), times=5, seed=5)
    summary = await producing
    assert summary.sent == 100_000
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(tables, fresh_dataset)) >= len(sent), 90, "bronze")
    await sink.working()  # the last restart came up (and so can stop gracefully)
    assert sink.terminate() == 0, sink.log_tail()
    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)


async def test_minio_outage_of_30s_loses_and_doubles_nothing(
    settings: Settings, tables: Tables, fresh_dataset: str, start_service, stack
) -> None:
    env = _sink_env(fresh_dataset, flush_records=2000)
    sink = start_service("bronze_sink", **env)
    producing = asyncio.create_task(
        produce_synthetic(settings, "orders", count=40_000, rate=1_000, seed=13, topic=names.raw_topic(fresh_dataset))
    )
    await asyncio.sleep(5)
    await asyncio.to_thread(stack.stop_minio)
    await asyncio.sleep(30)
    await asyncio.to_thread(stack.start_minio)
    summary = await producing
    assert summary.sent == 40_000
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(tables, fresh_dataset)) >= len(sent), 120, "bronze")
    assert sink.alive(), "the sink must survive the outage by itself\n" + sink.log_tail()
    retries = metric_total(sink.metrics_port, "lab_lake_write_retries_total", layer="bronze")
    assert retries > 0, "the outage was not noticed"
    assert sink.terminate() == 0, sink.log_tail()
    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)


async def test_sink_assigned_while_minio_is_down_lands_everything_once_it_is_back(
    settings: Settings, tables: Tables, fresh_dataset: str, start_service, stack
) -> None:
    await produce_synthetic(settings, "orders", count=5_000, rate=0, seed=19, topic=names.raw_topic(fresh_dataset))
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    await asyncio.to_thread(stack.stop_minio)
    try:
        sink = start_service("bronze_sink", **_sink_env(fresh_dataset, flush_records=2000))
        await sink.working()  # assigned while the lake cannot be read: recovery must wait, not be skipped
        await asyncio.sleep(30)  # longer than the S3 client's own retries
    finally:
        await asyncio.to_thread(stack.start_minio)
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(tables, fresh_dataset)) >= len(sent), 90, "bronze")
    assert sink.alive(), sink.log_tail()
    assert sink.terminate() == 0, sink.log_tail()
    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)


async def test_two_instances_share_partitions_one_stopped_midway(
    settings: Settings, tables: Tables, fresh_dataset: str, start_service
) -> None:
    env = _sink_env(fresh_dataset, flush_records=2000)
    first = start_service("bronze_sink", **env)
    second = start_service("bronze_sink", **env)
    producing = asyncio.create_task(
        produce_synthetic(settings, "orders", count=60_000, rate=6_000, seed=17, topic=names.raw_topic(fresh_dataset))
    )
    await second.working()  # it owns partitions (a loaded machine may take a while to start it)
    await asyncio.sleep(3)
    assert second.terminate() == 0, second.log_tail()
    summary = await producing
    assert summary.sent == 60_000
    sent = await read_topic(settings, names.raw_topic(fresh_dataset))
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(tables, fresh_dataset)) >= len(sent), 90, "bronze")
    assert first.terminate() == 0, first.log_tail()
    assert_exactly_once(bronze_rows(tables, fresh_dataset), sent)
