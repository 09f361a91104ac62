"""End-to-end benchmark: the whole pipeline as real processes, from the first send until gold is
complete, its freshness through the API at half that rate, the broker's limit and a Quix Streams
peer, all in one run on one throw-away native stack. (One module, over 400 lines, because its four
phases share one stack, one table of watched processes and one lag sampler, and are read in order.)

    .venv/bin/python -m bench pipeline --events 1000000      (make bench)

1. *Limit*: the same events (generated up front, in memory) sent by a bare aiokafka producer to a
   scratch topic and read back by a bare aiokafka ``getmany`` loop, before any service runs.
   Then the topology's own limit (``bench/topology.py``): the same events through identity stages
   (raw -> silver + changelog -> shuffle -> gold, bare aiokafka transactional loops) on a dataset
   of their own, timed like the pipeline (``--no-topology`` skips it).
2. *Throughput*: bronze_sink, silver_refiner, gold_aggregator and the api start as
   ``python -m services.<name>``; N orders are sent to ``<ds>.raw`` unpaced (the pipeline consumes
   while they are sent). Gold is complete when the silver refiner has committed all of raw, the
   shuffle stage all of silver and the aggregating stage all of the shuffle topic; end-to-end
   events/s = N / (that moment - first send). Each service's rate is N (or the records of its
   input topic) over the time until its group had committed its input.
3. *Peer*: the Quix Streams application of ``bench/quix_peer.py`` over the same raw topic (our
   services are idle meanwhile), timed by its consumer group (raw and its re-partition topic).
4. *Freshness*: orders at 50% of the measured end-to-end rate (``produce_synthetic rate=``) plus,
   every 0.25 s, a marker order shipped to a country code no generated order has (``XA``); a
   marker is visible once the API's ``by_country_1m`` window for ``XA`` counts it. p50/p95/p99 of
   send -> visible.

Consumer lag of every group is sampled every 0.5 s (plot: ``bench/results/pipeline-lag.png``),
RSS and CPU time of every process every 0.5 s. The headline figures are printed next to their
targets (``bench/targets.py``) and appended to ``bench/results/history.csv`` (``bench/history.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import orjson
import psutil
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from archlab.core import names
from archlab.core.names import TopicKind
from archlab.core.settings import Settings
from archlab.devstack.launcher import launch
from archlab.devstack.services import PIPELINE_SERVICES, service
from archlab.ingest.generators import make_generator
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import KeyedBatchSender, make_consumer, make_producer, topic_partitions
from archlab.kafka.lag import LagProbe, lag_of, settled_offsets
from archlab.kafka.topics import create_topics, new_topic
from archlab.testing.processes import ServiceProcess, free_ports
from bench import history, targets
from bench.common import (
    RESULTS,
    Processes,
    consume_only_rate,
    copy_contract,
    fresh_dataset,
    listener_pid,
    load_average,
    report,
    stack_env,
    throwaway_stack,
)
from bench.topology import identity_limit

SERVICES = (*PIPELINE_SERVICES, "api")
SEND_EVENTS_PER_S = 20_000  # event-time speed of the generated stream: N orders span N/20,000 s of the past
MARKER_COUNTRY = "XA"  # ISO 3166 user-assigned: never generated
MARKER_EVERY_S = 0.25
STOP_GRACE_S = 20.0


# --- consumer lag --------------------------------------------------------------------------------
class Lag(LagProbe):
    """Committed offsets of consumer groups against the (read_committed) end of their input topics,
    and the lag series sampled for the plot."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.series: list[tuple[float, dict[str, int]]] = []

    async def ends(self, topic: str) -> dict[TopicPartition, int]:
        """The offset a consumer that has read everything of ``topic`` now commits, per partition."""
        return settled_offsets(await self.end_offsets([topic]))

    async def lag(self, group: str, topic: str) -> int:
        return sum(lag_of(await self.ends(topic), await self.committed(group, [topic])).values())

    async def sample_forever(self, groups: dict[str, str], stop: asyncio.Event, origin: float) -> None:
        """Every 0.5 s: the lag of each group (name -> input topic) for the plot."""
        while not stop.is_set():
            row = {}
            for group, topic in list(groups.items()):
                with contextlib.suppress(Exception):
                    row[group] = await self.lag(group, topic)
            self.series.append((time.perf_counter() - origin, row))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


# --- sending -------------------------------------------------------------------------------------
Batch = list[tuple[bytes | None, bytes, tuple]]


def generate(events: int, seed: int, start: datetime) -> list[Batch]:
    """The orders to send, generated up front so that neither rate includes the generator."""
    generator = make_generator("orders", seed=seed, start=start, events_per_second=SEND_EVENTS_PER_S)
    batches = []
    for first in range(0, events, 5_000):
        batches.append([(r.key, r.value, r.headers) for r in generator.batch(min(5_000, events - first))])
    return batches


async def send_all(settings: Settings, topic: str, batches: list[Batch]) -> float:
    """Send the events unpaced with a bare aiokafka producer; returns the seconds it took."""
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = await KeyedBatchSender.for_topic(producer, topic)
        started = time.perf_counter()
        since_flush = 0
        for batch in batches:
            for key, value, headers in batch:
                await sender.send(key, value, headers)
            since_flush += len(batch)
            if since_flush >= 50_000:
                _, errors = await sender.flush()
                if errors:
                    raise errors[0]
                since_flush = 0
        _, errors = await sender.flush()
        if errors:
            raise errors[0]
        return time.perf_counter() - started
    finally:
        await producer.stop()


# --- freshness -----------------------------------------------------------------------------------
def _marker(n: int) -> tuple[bytes, bytes, int]:
    now = datetime.now(UTC)
    order = f"O-9{n:07d}"
    value = {"event_id": str(uuid.uuid4()), "event_time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
             "order_id": order, "customer_id": "C-999999", "product_id": "P-99999", "category": "books",
             "quantity": 1, "unit_price": 1.0, "currency": "EUR", "country": MARKER_COUNTRY,
             "payment_method": "card", "channel": "web", "coupon_code": None}
    window = int(now.timestamp() * 1000) // 60_000 * 60_000
    return order.encode(), orjson.dumps(value), window


async def freshness(settings: Settings, dataset: str, api: str, rate: float, seconds: float) -> dict[str, object]:
    """Orders at ``rate`` for ``seconds`` plus markers; send -> visible in the API, per marker, and
    where that time goes: when each marker was first readable (read_committed) in silver, in the
    shuffle topic and (counted in its window) in gold."""
    sent: list[tuple[int, int, float, str]] = []  # (window start ms, n-th marker of that window, sent at, event id)
    per_window: dict[int, int] = {}
    visible: dict[int, float] = {}  # index in sent -> perf_counter when the API showed it
    seen: dict[str, dict[str, float]] = {"silver": {}, "shuffle": {}}  # stage -> event id -> perf_counter
    gold_counts: list[tuple[float, int, int]] = []  # (perf_counter, window start ms, events)
    done_sending = asyncio.Event()
    finished = asyncio.Event()
    needle = f'"country":"{MARKER_COUNTRY}"'.encode()

    def window_ms(text: str) -> int:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)

    async def markers() -> None:
        producer = make_producer(settings, linger_ms=0)
        await producer.start()
        try:
            n = 0
            while not done_sending.is_set():
                key, value, window = _marker(n)
                per_window[window] = per_window.get(window, 0) + 1
                nth = per_window[window]
                started = time.perf_counter()
                await producer.send_and_wait(names.raw_topic(dataset), value, key=key)
                sent.append((window, nth, started, orjson.loads(value)["event_id"]))
                n += 1
                await asyncio.sleep(MARKER_EVERY_S)
        finally:
            await producer.stop()

    async def poll() -> None:
        url = f"{api}/v1/datasets/{dataset}/aggregates/by_country_1m"
        async with httpx.AsyncClient(timeout=10) as http:
            while not (done_sending.is_set() and len(visible) == len(sent)):
                response = await http.get(url, params={"country": MARKER_COUNTRY, "limit": 1000})
                now = time.perf_counter()
                if response.status_code == 200:
                    counts = {window_ms(item["window_start"]): item.get("events") or 0 for item in response.json()["items"]}
                    for i, (window, nth, _at, _id) in enumerate(sent):
                        if i not in visible and counts.get(window, 0) >= nth:
                            visible[i] = now
                await asyncio.sleep(0.05)

    async def trace(tps: list[TopicPartition]) -> None:
        consumer = make_consumer(settings, group_id=None)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while not finished.is_set():
                fetched = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for tp, records in fetched.items():
                    stage = names.kind_of(tp.topic)
                    for record in records:
                        if record.value is None or needle not in record.value:
                            continue
                        row = orjson.loads(record.value)
                        if stage is TopicKind.GOLD:
                            if row.get("aggregate") == "by_country_1m":
                                gold_counts.append((now, window_ms(row["window_start"]), row.get("events") or 0))
                        else:
                            seen["silver" if stage is TopicKind.SILVER else "shuffle"].setdefault(row["event_id"], now)
        finally:
            await consumer.stop()

    async def load() -> object:
        try:
            return await produce_synthetic(settings, "orders", count=0, rate=rate, seed=2, duration=seconds,
                                           topic=names.raw_topic(dataset))
        finally:
            done_sending.set()

    tps = [tp for kind in (TopicKind.SILVER, TopicKind.GOLD_SHUFFLE, TopicKind.GOLD)
           for tp in await topic_partitions(settings, names.topic(dataset, kind))]
    tracer = asyncio.create_task(trace(tps))
    await asyncio.sleep(1)  # the tracer is at the end of its topics
    poller = asyncio.create_task(poll())
    summary, _ = await asyncio.gather(load(), markers())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poller, 120)
    finished.set()
    await tracer
    latencies = sorted(visible[i] - sent[i][2] for i in visible)

    def pct(values: list[float], q: float) -> float | None:
        values = sorted(values)
        return round(values[min(len(values) - 1, int(len(values) * q))], 3) if values else None

    # where the time goes, per marker: send -> silver -> shuffle -> gold -> API
    hops: dict[str, list[float]] = {"raw_to_silver": [], "silver_to_shuffle": [], "shuffle_to_gold": [], "gold_to_api": []}
    for i, (window, nth, at, event_id) in enumerate(sent):
        silver, shuffle = seen["silver"].get(event_id), seen["shuffle"].get(event_id)
        gold = next((t for t, w, events in gold_counts if w == window and events >= nth), None)
        if None in (silver, shuffle, gold) or i not in visible:
            continue
        hops["raw_to_silver"].append(silver - at)
        hops["silver_to_shuffle"].append(shuffle - silver)
        hops["shuffle_to_gold"].append(gold - shuffle)
        hops["gold_to_api"].append(visible[i] - gold)
    return {
        "freshness_rate_target_events_per_s": round(rate),
        "freshness_rate_sent_events_per_s": round(summary.rate),  # type: ignore[attr-defined]
        "freshness_markers": len(sent), "freshness_markers_seen": len(latencies),
        "freshness_p50_s": pct(latencies, 0.50), "freshness_p95_s": pct(latencies, 0.95),
        "freshness_p99_s": pct(latencies, 0.99), "freshness_max_s": round(latencies[-1], 3) if latencies else None,
        **{f"freshness_hop_p50/p95_s[{hop}]": f"{pct(values, 0.5)} / {pct(values, 0.95)}" for hop, values in hops.items()},
    }


# --- the run -------------------------------------------------------------------------------------
async def _wait_ready(lag: Lag, api: str, groups: list[str], timeout: float = 120) -> None:
    """Until every group exists on the broker and the API answers /readyz, then the first rebalance's
    few seconds (aiokafka cannot decode this broker's DescribeGroups answer, so no state is read)."""
    deadline = time.monotonic() + timeout
    known: set[str] = set()
    api_ready = False
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(KafkaError):
                known = set(await lag.groups())
            with contextlib.suppress(httpx.HTTPError):
                api_ready = (await http.get(f"{api}/readyz")).status_code == 200
            if api_ready and known.issuperset(groups):
                await asyncio.sleep(5)
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"services not ready after {timeout} s: groups {sorted(known)}, api ready {api_ready}")


async def _peer(settings: Settings, lag: Lag, raw: str, folder: Path, logs: Path, procs: Processes,
                guarantee: str) -> tuple[float, str, int]:
    """Run the Quix peer over ``raw``; (seconds until its group committed everything, guarantee, peak RSS)."""
    group = f"quix-peer-{guarantee}"
    raw_ends = await lag.ends(raw)
    started = time.perf_counter()
    peer = launch([
        sys.executable, "-m", "bench.quix_peer", "--bootstrap", settings.kafka_bootstrap, "--topic", raw,
        "--prefix", group, "--group", group, "--state-dir", str(folder / f"quix-state-{guarantee}"),
        "--guarantee", guarantee], log=logs / f"quix_peer_{guarantee}.log")
    watched = procs.add("quix_peer", peer.pid)
    try:
        waiter = asyncio.create_task(lag.wait_committed(group, raw_ends))
        while not waiter.done():
            if peer.exited():
                waiter.cancel()
                raise RuntimeError(f"the Quix peer exited with {peer.reap()}; see {logs}")
            await asyncio.sleep(0.2)
        # then the re-partition topic, read by the same group, until nothing more arrives
        while True:
            topics = {tp.topic for tp in await lag.committed(group)} - {raw}
            ends: dict[TopicPartition, int] = {}
            for topic in topics:
                ends.update(await lag.ends(topic))
            done = await lag.wait_committed(group, ends)
            again: dict[TopicPartition, int] = {}
            for topic in topics:
                again.update(await lag.ends(topic))
            if again == ends:
                return done - started, guarantee, watched.peak_rss
    finally:
        peer.stop(STOP_GRACE_S)
        watched.sample()
        del procs.watched["quix_peer"]


async def measure(events: int, freshness_s: float, peer: bool, topology: bool = True,
                  freshness_rate: float = 0.0) -> dict[str, object]:
    load_before = load_average()
    with throwaway_stack() as (_, settings), tempfile.TemporaryDirectory(prefix="lab-bench-pipeline-") as tmp:
        folder = Path(tmp)
        logs = RESULTS / "pipeline-logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        dataset = await fresh_dataset(settings)
        raw, silver, shuffle = names.raw_topic(dataset), names.silver_topic(dataset), names.gold_shuffle_topic(dataset)
        start = datetime.now(UTC) - timedelta(seconds=events / SEND_EVENTS_PER_S)
        procs = Processes()
        procs.add("bench (producer, samplers)", os.getpid()).children = False
        kafka_port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])
        minio_port = int(settings.s3_endpoint.rsplit(":", 1)[1])
        for name, port in (("kafka", kafka_port), ("minio", minio_port)):
            if (pid := listener_pid(port)) is not None:
                procs.add(name, pid)

        # 1. the limit: the same events to a scratch topic, then read back
        limit_topic = f"{dataset}.limit"
        await create_topics(settings, [new_topic(limit_topic, settings.topic_partitions, TopicKind.RAW)])
        batches = generate(events, seed=1, start=start)
        produce_s = await send_all(settings, limit_topic, batches)
        consumed, consume_s = await consume_only_rate(settings, limit_topic)
        print(f"[limit] produce-only {events / produce_s:,.0f}/s, consume-only {consumed / consume_s:,.0f}/s", flush=True)
        topology_result: dict[str, object] = {}
        if topology:  # the same events through identity stages on a dataset of their own
            try:
                topology_result = await identity_limit(settings, await fresh_dataset(settings), events,
                                                       partial(send_all, settings, batches=batches), procs, logs)
                print(f"[limit] identity topology {topology_result['topology_limit_events_per_s']:,}/s", flush=True)
            except RuntimeError as error:  # the rest of the run still measures the pipeline
                topology_result = {"topology_limit": f"failed: {error}"}
                print(f"[limit] identity topology failed: {error}", flush=True)

        # 2. the services
        api_port, *metrics = free_ports(1 + len(SERVICES))
        env = stack_env(settings, LAB_DATASETS=dataset, LAB_CONTRACTS_DIR=str(copy_contract(folder / "contracts", dataset)),
                        LAB_API_PORT=str(api_port), LAB_API_HOST="127.0.0.1", LAB_LOG_LEVEL="WARNING",
                        LAB_BRONZE_GROUP="bronze_sink", LAB_SILVER_GROUP="silver_refiner",
                        LAB_GOLD_GROUP="gold_aggregator", LAB_INSTANCE_ID="bench")
        running: dict[str, ServiceProcess] = {}
        for name, port in zip(SERVICES, metrics, strict=True):
            service_env = {**env, **service(name).env(metrics_port=port)}
            running[name] = ServiceProcess(name, service_env, logs / f"{name}.log")
            procs.add(name, running[name].pid)
        api = f"http://127.0.0.1:{api_port}"
        shuffle_group = names.group("gold_aggregator", "shuffle")
        groups = {"bronze_sink": raw, "silver_refiner": raw, shuffle_group: silver, "gold_aggregator": shuffle,
                  names.group("silver_refiner", "silver", "lake"): silver,
                  names.group("gold_aggregator", "gold", "lake"): names.gold_topic(dataset)}
        stop_sampling = asyncio.Event()
        result: dict[str, object] = {}
        try:
            async with Lag(settings) as lag:
                await _wait_ready(lag, api, ["bronze_sink", "silver_refiner", shuffle_group, "gold_aggregator"])
                origin = time.perf_counter()
                samplers = [asyncio.create_task(lag.sample_forever(groups, stop_sampling, origin)),
                            asyncio.create_task(procs.run(stop_sampling))]
                phases: dict[str, float] = {}

                # 3. throughput: send N unpaced, wait until gold is complete
                cpu_before = procs.cpu()
                machine_before = psutil.cpu_times()
                t0 = time.perf_counter()
                phases["throughput"] = t0 - origin
                send_s = await send_all(settings, raw, batches)
                del batches
                raw_ends = await lag.ends(raw)
                bronze = asyncio.create_task(lag.wait_committed("bronze_sink", raw_ends))
                t_silver = await lag.wait_committed("silver_refiner", raw_ends)
                silver_ends = await lag.ends(silver)
                t_shuffle = await lag.wait_committed(shuffle_group, silver_ends)
                shuffle_ends = await lag.ends(shuffle)
                t_gold = await lag.wait_committed("gold_aggregator", shuffle_ends)
                t_bronze = await bronze
                cpu_after = procs.cpu()
                machine_after = psutil.cpu_times()
                elapsed = t_gold - t0
                e2e = events / elapsed
                produce_rate = events / produce_s
                print(f"[throughput] {events:,} events to gold in {elapsed:.1f} s: {e2e:,.0f}/s", flush=True)
                result.update({
                    "events": events,
                    "load_average_before": load_before,
                    "produce_only_events_per_s": round(produce_rate),
                    "consume_only_events_per_s": round(consumed / consume_s),
                    "send_events_per_s": round(events / send_s),
                    "end_to_end_s": round(elapsed, 2),
                    "end_to_end_events_per_s": round(e2e),
                    "ratio_end_to_end_to_produce_only": round(e2e / produce_rate, 3),
                    **topology_result,
                    **({"ratio_end_to_end_to_topology_limit": round(e2e / topology_result["topology_limit_events_per_s"], 3)}
                       if "topology_limit_events_per_s" in topology_result else {}),
                    "bronze_done_s": round(t_bronze - t0, 2), "bronze_events_per_s": round(events / (t_bronze - t0)),
                    "silver_done_s": round(t_silver - t0, 2), "silver_events_per_s": round(events / (t_silver - t0)),
                    "shuffle_done_s": round(t_shuffle - t0, 2),
                    "gold_done_s": round(elapsed, 2),
                })
                for name in cpu_after:
                    used = cpu_after[name] - cpu_before.get(name, 0.0)
                    result[f"cpu_s_during_throughput[{name}]"] = f"{used:.1f} ({used / elapsed:.0%} of a core)"
                ours = sum(cpu_after.values()) - sum(cpu_before.values())
                busy = sum(machine_after) - sum(machine_before) - (machine_after.idle - machine_before.idle) - (
                    machine_after.iowait - machine_before.iowait)
                result["cpu_s_during_throughput[this run, total]"] = f"{ours:.1f} of {os.cpu_count() * elapsed:.1f} available"
                result["cpu_s_during_throughput[other processes on the machine]"] = f"{max(0.0, busy - ours):.1f}"
                result["cpu_us_per_event[this run]"] = round(ours / events * 1e6)

                # 4. the peer, over the same raw topic (our services idle)
                if peer:
                    phases["peer"] = time.perf_counter() - origin
                    groups_peer = {"quix-peer-exactly-once": raw}
                    groups.update(groups_peer)
                    try:
                        peer_s, guarantee, peer_rss = await _peer(settings, lag, raw, folder, logs, procs, "exactly-once")
                    except RuntimeError as error:
                        print(f"[peer] exactly-once failed ({error}); at-least-once", flush=True)
                        groups["quix-peer-at-least-once"] = raw
                        peer_s, guarantee, peer_rss = await _peer(settings, lag, raw, folder, logs, procs, "at-least-once")
                    for g in [g for g in groups if g.startswith("quix-peer")]:
                        del groups[g]
                    peer_rate = events / peer_s
                    print(f"[peer] Quix Streams ({guarantee}): {peer_rate:,.0f}/s", flush=True)
                    result.update({"peer": f"Quix Streams {__import__('quixstreams').__version__}, {guarantee}",
                                   "peer_s": round(peer_s, 2), "peer_events_per_s": round(peer_rate),
                                   "ratio_end_to_end_to_peer": round(e2e / peer_rate, 2),
                                   "peak_rss_mb[quix_peer]": round(peer_rss / 2**20)})

                # 5. freshness at half the end-to-end rate (or the rate asked for)
                if freshness_s > 0:
                    phases["freshness"] = time.perf_counter() - origin
                    cpu_before, fresh_started = procs.cpu(), time.perf_counter()
                    result.update(await freshness(settings, dataset, api, freshness_rate or e2e / 2, freshness_s))
                    fresh_s, cpu_after = time.perf_counter() - fresh_started, procs.cpu()
                    for name in cpu_after:  # the bench's own share: the paced producer and the marker tracer
                        used = cpu_after[name] - cpu_before.get(name, 0.0)
                        result[f"cpu_s_during_freshness[{name}]"] = f"{used:.1f} ({used / fresh_s:.0%} of a core)"
                    print(f"[freshness] p50 {result['freshness_p50_s']} s, p95 {result['freshness_p95_s']} s", flush=True)
                phases["end"] = time.perf_counter() - origin
                stop_sampling.set()
                await asyncio.gather(*samplers)
        finally:
            stop_sampling.set()
            for process in running.values():
                process.terminate(STOP_GRACE_S)
        for name in SERVICES:
            result[f"peak_rss_mb[{name}]"] = round(procs.watched[name].peak_rss / 2**20)
        for name in ("kafka", "minio"):
            if name in procs.watched:
                result[f"peak_rss_mb[{name}]"] = round(procs.watched[name].peak_rss / 2**20)
        result["load_average_after"] = load_average()
    _plot(lag.series, phases)
    return result


def _plot(series: list[tuple[float, dict[str, int]]], phases: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline-lag.json").write_bytes(orjson.dumps({"phases_s": phases, "samples": [
        {"t_s": round(t, 2), **row} for t, row in series]}, option=orjson.OPT_INDENT_2))
    groups = sorted({g for _, row in series for g in row})
    fig, ax = plt.subplots(figsize=(11, 5))
    for group in groups:
        points = [(t, row[group]) for t, row in series if group in row]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=group, linewidth=1.2)
    for name, at in phases.items():
        if name != "end":
            ax.axvline(at, color="grey", linestyle=":", linewidth=1)
            ax.text(at, ax.get_ylim()[1] * 0.98, f" {name}", va="top", fontsize=8, color="grey")
    ax.set_xlabel("seconds since the services were ready")
    ax.set_ylabel("consumer lag (records)")
    ax.set_title("End-to-end benchmark: consumer lag per group (sampled every 0.5 s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "pipeline-lag.png", dpi=110)
    plt.close(fig)


def main(events: int = 1_000_000, freshness_s: float = 60.0, peer: bool = True, topology: bool = True,
         freshness_rate: float = 0.0) -> None:
    result = asyncio.run(measure(events, freshness_s, peer, topology, freshness_rate))
    report("pipeline", "End-to-end: raw -> silver -> gold, freshness through the API, limit and peer", result,
           summary=targets.table(result, "pipeline"))
    history.append(result, "pipeline")
    print(f"lag plot: {RESULTS / 'pipeline-lag.png'}; history: {history.HISTORY} and {history.PLOT.name}")


if __name__ == "__main__":
    main()
