"""The native stack is the real thing: Kafka transactions and isolation levels, S3 semantics of
MinIO (multipart, persistence across a restart), idempotent bootstrap, and a clean stop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest
import s3fs
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from archlab.core.names import dataset_topics, gold_topic, raw_topic
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.launcher import port_open
from archlab.devstack.native import NativeStack, StackConfig
from archlab.kafka.topics import create_topics, ensure_topics, new_topic
from archlab.lake.store import ensure_bucket
from archlab.testing.processes import free_ports

pytestmark = pytest.mark.integration


async def _create_topic(settings: Settings, partitions: int = 2) -> str:
    topic = f"infra-{uuid.uuid4().hex[:12]}"
    await create_topics(settings, [new_topic(topic, partitions)])
    return topic


async def _read_all(settings: Settings, topic: str, partitions: int, isolation_level: str) -> list[bytes]:
    """Every record up to the end offsets the broker reports for this isolation level."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level=isolation_level,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "consumer did not reach the end offsets"
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                values.extend(record.value for record in batch)
        return values
    finally:
        await consumer.stop()


async def test_transactions_and_isolation_levels(settings: Settings) -> None:
    topic = await _create_topic(settings, partitions=2)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}",
        enable_idempotence=True,
    )
    await producer.start()
    committed = [f"committed-{i}".encode() for i in range(10)]
    aborted = [f"aborted-{i}".encode() for i in range(10)]
    committed_after = [f"after-{i}".encode() for i in range(5)]
    try:
        async with producer.transaction():
            for i, value in enumerate(committed):
                await producer.send(topic, value, key=str(i).encode())
        await producer.begin_transaction()
        for i, value in enumerate(aborted):
            await producer.send(topic, value, key=str(i).encode())
        await producer.flush()  # the aborted records really are in the log
        await producer.abort_transaction()
        async with producer.transaction():  # a commit after the abort: the reader must skip the middle
            for i, value in enumerate(committed_after):
                await producer.send(topic, value, key=str(i).encode())
    finally:
        await producer.stop()

    read_committed = await _read_all(settings, topic, 2, "read_committed")
    read_uncommitted = await _read_all(settings, topic, 2, "read_uncommitted")
    assert sorted(read_committed) == sorted(committed + committed_after)
    assert sorted(read_uncommitted) == sorted(committed + aborted + committed_after)


async def test_broker_crash_keeps_committed_records(stack: NativeStack, settings: Settings) -> None:
    topic = await _create_topic(settings, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(100):
            await producer.send(topic, f"v{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    old_pid = stack.pid("kafka")
    await asyncio.to_thread(stack.kill_kafka)
    assert old_pid is not None and stack.pid("kafka") is None and not psutil.pid_exists(old_pid)
    assert not port_open(stack.config.kafka_port)
    await asyncio.to_thread(stack.start_kafka)
    # With flush.messages unset, records survive SIGKILL of the broker (page cache), not a power cut.
    assert await _read_all(settings, topic, 1, "read_uncommitted") == [f"v{i}".encode() for i in range(100)]


def _zombie(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _fs(settings: Settings) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True, **settings.storage_options)


def test_minio_object_round_trip(settings: Settings) -> None:
    fs = _fs(settings)
    prefix = f"{settings.bucket}/infra-{uuid.uuid4().hex[:12]}"
    fs.pipe(f"{prefix}/a.txt", b"alpha")
    fs.pipe(f"{prefix}/sub/b.txt", b"beta")
    assert fs.cat(f"{prefix}/a.txt") == b"alpha"
    assert sorted(fs.ls(prefix)) == [f"{prefix}/a.txt", f"{prefix}/sub"]
    assert fs.find(prefix) == [f"{prefix}/a.txt", f"{prefix}/sub/b.txt"]
    fs.rm(f"{prefix}/a.txt")
    assert not fs.exists(f"{prefix}/a.txt")
    assert fs.find(prefix) == [f"{prefix}/sub/b.txt"]
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{prefix}/a.txt")


def test_minio_multipart_upload_is_byte_identical(settings: Settings) -> None:
    fs = _fs(settings)
    path = f"{settings.bucket}/infra-{uuid.uuid4().hex[:12]}/big.bin"
    data = os.urandom(20 * 1024 * 1024)
    with fs.open(path, "wb", block_size=5 * 1024 * 1024) as out:
        for start in range(0, len(data), 1024 * 1024):
            out.write(data[start : start + 1024 * 1024])
    info = fs.info(path)
    assert info["size"] == len(data)
    assert info["ETag"].strip('"').endswith("-4"), f"not a 4-part multipart upload: {info['ETag']}"
    assert hashlib.sha256(fs.cat(path)).digest() == hashlib.sha256(data).digest()


def test_minio_data_survives_restart(stack: NativeStack, settings: Settings) -> None:
    path = f"{settings.bucket}/infra-{uuid.uuid4().hex[:12]}/kept.bin"
    data = os.urandom(1024 * 1024)
    _fs(settings).pipe(path, data)
    stack.stop_minio()
    assert stack.pid("minio") is None and not stack.minio_healthy()
    stack.start_minio()
    assert _fs(settings).cat(path) == data


async def test_bootstrap_is_idempotent(settings: Settings) -> None:
    dataset = f"d{uuid.uuid4().hex[:10]}"
    names = await ensure_topics(settings, [dataset])
    assert names == dataset_topics(dataset)
    assert await ensure_topics(settings, [dataset]) == names  # existing topics are fine
    assert ensure_bucket(settings) is False  # the stack fixture created it already
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        assert described == {name: settings.topic_partitions for name in names}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in (gold_topic(dataset), raw_topic(dataset))]
        )
        policies = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            for response in configs for resource in response.resources
        }
        assert policies == {gold_topic(dataset): "compact", raw_topic(dataset): "delete"}
    finally:
        await admin.close()


def test_separate_stack_starts_and_stops_cleanly(tmp_path, stack: NativeStack) -> None:
    """A second stack on other ports; `lab infra down` from another process leaves nothing behind."""
    kafka_port, controller_port, minio_port, console_port = ports = free_ports(4)
    config = StackConfig(tmp_path / "stack", kafka_port=kafka_port, kafka_controller_port=controller_port,
                         minio_port=minio_port, minio_console_port=console_port,
                         access_key="other", secret_key="other-secret")
    other = NativeStack(config)
    try:
        other.start()
        assert other.is_running() and other.kafka_healthy() and other.minio_healthy()
        pids = [other.pid("kafka"), other.pid("minio")]
        down = subprocess.run(
            [sys.executable, "-c", "from archlab.cli.infra import infra_app; infra_app()", "down",
             "--root", str(config.root)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )
        assert down.returncode == 0, down.stderr
        assert not other.is_running()
        assert all(_zombie(pid) or not psutil.pid_exists(pid or 0) for pid in pids)
        assert not any(port_open(port) for port in ports)
        assert stack.is_running()  # the session stack was not touched
    finally:
        other.stop()


_OWNER = """
import sys
from pathlib import Path
from archlab.devstack.native import NativeStack, StackConfig
config = StackConfig(Path(sys.argv[1]), minio_port=int(sys.argv[2]), minio_console_port=int(sys.argv[3]),
                     access_key="owner", secret_key="owner-secret")
NativeStack(config, exit_with_owner=True).start_minio()
print("ready", flush=True)
sys.stdin.read()
"""


def test_servers_die_with_a_killed_owner(tmp_path) -> None:
    """A test session killed with SIGKILL (no finalizers run) must not leave servers running."""
    minio_port, console_port = free_ports(2)
    config = StackConfig(tmp_path / "stack", minio_port=minio_port, minio_console_port=console_port,
                         access_key="owner", secret_key="owner-secret")
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(config.root), str(minio_port), str(console_port)],
                             cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    observer = NativeStack(config)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"ready\n"
        minio_pid = observer.pid("minio")
        assert minio_pid is not None and port_open(minio_port)
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 30
        while psutil.pid_exists(minio_pid) or port_open(minio_port):
            assert time.monotonic() < deadline, "MinIO still runs 30 s after its owner was killed"
            time.sleep(0.2)
        assert observer.pid("minio") is None
    finally:
        owner.kill()
        owner.wait(10)
        observer.stop()
