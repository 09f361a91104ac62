"""The limit of our own topology (issue #14, item 1): the same topics, partitions and transactions
as the pipeline, with identity transforms. What would the pipeline's rate be if its stages did no work?

Three processes, one per stage as the services run them, each a bare aiokafka loop: read_committed
``getmany``, then one transaction that writes the batch on and commits its offsets:

* ``silver``: raw -> silver (the record as it came) + the de-duplication changelog (a key per event);
* ``shuffle``: silver -> the gold shuffle topic;
* ``gold``: the shuffle topic -> gold (one record per event: more than the real stage writes).

Each writes to the same partition number it read from, through the services' batching sender. No lake sinks (bronze, silver and gold lake
writers are not in this limit). The stages run on a dataset of their own (its topics created like
any dataset's), and are timed like the pipeline: from the first send until the last stage has
committed all of its input.

    python -m bench.topology STAGE DATASET      (one stage; started by ``bench/pipeline.py``)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from archlab.core import names
from archlab.core.names import TopicKind
from archlab.core.service import run_service
from archlab.core.settings import Settings
from archlab.devstack.launcher import ManagedProcess, launch
from archlab.kafka.clients import KeyedBatchSender, make_consumer, make_producer
from archlab.kafka.lag import LagProbe, settled_offsets
from bench.common import Processes, stack_env

#: stage -> (the topic kind it reads, the kinds it writes)
STAGES: dict[str, tuple[TopicKind, tuple[TopicKind, ...]]] = {
    "silver": (TopicKind.RAW, (TopicKind.SILVER, TopicKind.SILVER_DEDUP)),
    "shuffle": (TopicKind.SILVER, (TopicKind.GOLD_SHUFFLE,)),
    "gold": (TopicKind.GOLD_SHUFFLE, (TopicKind.GOLD,)),
}
FETCH_RECORDS = 10_000
SILVER_MAX_BYTES = 1_000_000  # below the broker's default max.message.bytes (raw allows more)


def group_of(stage: str) -> str:
    return names.group("identity_topology", stage)


async def run_stage(settings: Settings, stage: str, dataset: str, stop: asyncio.Event) -> None:
    """Copy ``stage``'s input to its outputs, one transaction per fetched batch, until ``stop``."""
    source, outputs = STAGES[stage]
    group = group_of(stage)
    consumer = make_consumer(settings, names.topic(dataset, source), group_id=group)
    producer = make_producer(settings, transactional_id=names.group("identity_topology", stage, dataset))
    await consumer.start()
    await producer.start()
    try:
        # the services' batching sender: one record batch per partition, one request per batch
        senders = {kind: await KeyedBatchSender.for_topic(producer, names.topic(dataset, kind))
                   for kind in (*outputs, TopicKind.QUARANTINE)}
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
            if not fetched:
                continue
            async with producer.transaction():
                for tp, records in fetched.items():
                    for record in records:
                        # compacted topics (changelog, gold) need a key; raw's dirty records may have none
                        key = record.key or f"{tp.partition}:{record.offset}".encode()
                        for kind in outputs:
                            if kind is TopicKind.SILVER_DEDUP:
                                await senders[kind].send(key, b"", partition=tp.partition)
                            elif len(record.value or b"") > SILVER_MAX_BYTES:  # as silver does: to quarantine
                                await senders[TopicKind.QUARANTINE].send(key, record.value, partition=tp.partition)
                            else:
                                await senders[kind].send(key, record.value, partition=tp.partition)
                for sender in senders.values():
                    _, errors = await sender.flush()
                    if errors:
                        raise errors[0]
                await producer.send_offsets_to_transaction(
                    {tp: records[-1].offset + 1 for tp, records in fetched.items()}, group)
    finally:
        await consumer.stop()
        await producer.stop()


def _start(settings: Settings, stage: str, dataset: str, logs: Path) -> ManagedProcess:
    env = stack_env(settings, LAB_LOG_LEVEL="WARNING", LAB_INSTANCE_ID="identity")
    return launch([sys.executable, "-m", "bench.topology", stage, dataset], log=logs / f"identity_{stage}.log",
                  env=env)


async def _committed(probe: LagProbe, group: str, ends: dict[TopicPartition, int],
                     stages: dict[str, ManagedProcess], logs: Path) -> float:
    """When ``group`` had committed ``ends``; a RuntimeError as soon as a stage has died instead."""
    waiter = asyncio.create_task(probe.wait_committed(group, ends))
    while not waiter.done():
        if any(process.exited() for process in stages.values()):
            waiter.cancel()
            raise RuntimeError(f"an identity stage exited; see {logs}")
        await asyncio.wait({waiter}, timeout=0.5)
    return waiter.result()


async def _warm_up(settings: Settings, dataset: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        topic = names.raw_topic(dataset)
        for partition in await producer.partitions_for(topic):
            await producer.send_and_wait(topic, b"{}", key=b"warm-up", partition=partition)
    finally:
        await producer.stop()


async def _through(probe: LagProbe, dataset: str, stages: dict[str, ManagedProcess], logs: Path,
                   started: float) -> dict[str, float]:
    """Seconds from ``started`` until each stage had committed everything written to its input."""
    done = {}
    for stage, (source, _) in STAGES.items():
        ends = settled_offsets(await probe.end_offsets([names.topic(dataset, source)]))
        done[stage] = await _committed(probe, group_of(stage), ends, stages, logs) - started
    return done


async def identity_limit(settings: Settings, dataset: str, events: int, send: Callable[[str], Awaitable[float]],
                         procs: Processes, logs: Path) -> dict[str, object]:
    """Start the three identity stages on ``dataset`` (a fresh one, its topics created), ``send`` the events to its raw
    topic, wait until every stage has committed all of its input: the rate, and when each stage was
    done and the CPU it used (the cost of the topology alone, per stage)."""
    stages = {stage: _start(settings, stage, dataset, logs) for stage in STAGES}
    for stage, process in stages.items():
        procs.add(f"identity_{stage}", process.pid)
    try:
        async with LagProbe(settings) as probe:
            deadline = time.monotonic() + 120
            known: set[str] = set()
            while not set(map(group_of, STAGES)) <= known:
                if time.monotonic() > deadline or any(p.exited() for p in stages.values()):
                    raise RuntimeError(f"the identity stages did not start; see {logs}")
                await asyncio.sleep(0.5)
                with contextlib.suppress(KafkaError):  # e.g. the broker still loads its offsets topic
                    known = set(await probe.groups())
            await asyncio.sleep(3)  # the groups' first rebalance
            # one record per partition through every stage first: the broker's first transactions
            # (its transaction log, the coordinators) are a start-up cost, not the topology's rate
            await _warm_up(settings, dataset)
            await _through(probe, dataset, stages, logs, time.perf_counter())
            cpu_before = procs.cpu()
            started = time.perf_counter()
            await send(names.raw_topic(dataset))
            done = await _through(probe, dataset, stages, logs, started)
            cpu_after = procs.cpu()
    finally:
        for process in stages.values():
            process.stop(20)
        for stage in STAGES:
            del procs.watched[f"identity_{stage}"]
    elapsed = done["gold"]
    result: dict[str, object] = {"topology_limit_s": round(elapsed, 2),
                                 "topology_limit_events_per_s": round(events / elapsed)}
    for stage in STAGES:
        name = f"identity_{stage}"
        used = cpu_after[name] - cpu_before.get(name, 0.0)
        result[f"topology_limit_done_s[{stage}]"] = round(done[stage], 2)
        result[f"topology_limit_cpu_s[{stage}]"] = f"{used:.1f} ({used / elapsed:.0%} of a core)"
        result[f"topology_limit_cpu_us_per_event[{stage}]"] = round(used / events * 1e6)
    return result


if __name__ == "__main__":
    _stage, _dataset = sys.argv[1], sys.argv[2]
    run_service(f"identity_{_stage}", __doc__ or "", lambda s, stop: run_stage(s, _stage, _dataset, stop),
                Settings, argv=[])
