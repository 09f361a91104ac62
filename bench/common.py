"""What every benchmark shares: a throw-away native stack, a fresh dataset, result files."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil

from archlab.core import names
from archlab.core.service import tune_process
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.native import NativeStack, StackConfig
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.clients import read_to_end, topic_partitions
from archlab.kafka.lag import wait_caught_up
from archlab.kafka.topics import ensure_topics
from archlab.lake.store import ensure_bucket
from archlab.testing.processes import free_ports

RESULTS = PROJECT_ROOT / "bench" / "results"


@contextmanager
def throwaway_stack(name: str = "bench") -> Iterator[tuple[NativeStack, Settings]]:
    """Kafka and MinIO on free ports with data in a temporary folder, stopped afterwards (and when
    this process dies): the stack, to stop or restart parts of it, and settings for bucket ``name``."""
    with tempfile.TemporaryDirectory(prefix=f"lab-{name}-") as root:
        kafka, controller, minio, console = free_ports(4)
        config = StackConfig(root=Path(root), kafka_port=kafka, kafka_controller_port=controller,
                             minio_port=minio, minio_console_port=console,
                             access_key=f"{name}-admin", secret_key=uuid.uuid4().hex)
        stack = NativeStack(config, exit_with_owner=True)
        os.environ["LAB_ENV_FILE"] = ""  # the services benchmarked read no developer .env (archlab.core.settings)
        tune_process()  # stages run in this process run as in their service's
        stack.start()
        try:
            settings = Settings(kafka_bootstrap=config.bootstrap, s3_endpoint=config.s3_endpoint,
                                s3_access_key=config.access_key, s3_secret_key=config.secret_key,
                                bucket=name)  # type: ignore[call-arg]
            ensure_bucket(settings)
            yield stack, settings
        finally:
            stack.stop()


def stack_env(settings: Settings, **variables: str) -> dict[str, str]:
    """This process's environment plus the LAB_* variables that point a service process at the
    throw-away stack, and ``variables``."""
    return {**os.environ, "LAB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "LAB_S3_ENDPOINT": settings.s3_endpoint,
            "LAB_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
            "LAB_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(), "LAB_BUCKET": settings.bucket,
            **variables}


def copy_contract(folder: Path, dataset: str, original: str = "orders") -> Path:
    """``folder`` holding the shipped contract ``original`` renamed to ``dataset`` (and the reference
    tables it joins): a scratch dataset for service processes (``LAB_CONTRACTS_DIR``)."""
    if not (folder / "reference").exists():
        shutil.copytree(PROJECT_ROOT / "contracts" / "reference", folder / "reference")
    text = (PROJECT_ROOT / "contracts" / f"{original}.yaml").read_text()
    (folder / f"{dataset}.yaml").write_text(text.replace(f"dataset: {original}", f"dataset: {dataset}", 1))
    return folder


async def fresh_dataset(settings: Settings) -> str:
    name = f"bench{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [name])
    return name


async def consume_only_rate(settings: Settings, topic: str) -> tuple[int, float]:
    """(records, seconds) to read a whole topic with aiokafka getmany and do nothing else: the limit."""
    partitions = await topic_partitions(settings, topic)
    started = time.perf_counter()
    seen = 0
    async for records in read_to_end(settings, partitions, 10_000):
        seen += len(records)
    return seen, time.perf_counter() - started


#: A service's stage run as the service runs it: (settings, dataset, consumer group, stop event).
Component = Callable[[Settings, str, str, asyncio.Event], Awaitable[None]]
#: What a benchmark reads off the stack once its component stopped (settings, dataset): more result entries.
Afterwards = Callable[[Settings, str], Awaitable[dict[str, object]]]


async def against_consume_only(events: int, label: str, target: float, component: Component,
                               afterwards: Afterwards | None = None) -> dict[str, object]:
    """Run a started component over ``events`` orders until its group has committed them all, and
    compare its rate with a bare aiokafka read of the same topic in the same run (then ``afterwards``,
    before the stack goes)."""
    with throwaway_stack() as (_, settings):
        dataset = await fresh_dataset(settings)
        topic = names.raw_topic(dataset)
        produced = await produce_synthetic(settings, "orders", count=events, rate=0, seed=1, topic=topic)
        consumed, consume_s = await consume_only_rate(settings, topic)
        group = names.group(label, dataset)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(component(settings, dataset, group, stop))
        await wait_caught_up(settings, group, [topic], poll_s=0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        extra = await afterwards(settings, dataset) if afterwards else {}
    consume_rate = consumed / consume_s
    rate = events / elapsed
    return {
        "events": events,
        "produce_events_per_s": round(produced.rate),
        "consume_only_events_per_s": round(consume_rate),
        f"{label}_events_per_s": round(rate),
        f"ratio_{label}_to_consume_only": round(rate / consume_rate, 3),
        "target_ratio": target,
        **extra,
    }


@dataclass
class Watched:
    """A process whose RSS (with its children) and CPU time are sampled; with ``private``, its USS too:
    the memory that is its own, without the shared libraries' pages RSS counts in every process."""

    name: str
    proc: psutil.Process
    children: bool = True
    peak_rss: int = 0
    rss: int = 0  # at the last sample
    peak_uss: int = 0
    cpu_s: float = 0.0

    def sample(self, private: bool = False) -> None:
        with suppress(psutil.Error):
            family = [self.proc, *(self.proc.children(recursive=True) if self.children else [])]
            rss = uss = cpu = 0
            for p in family:
                with suppress(psutil.Error):
                    if private:  # reads /proc/<pid>/smaps_rollup: dearer than RSS, so only when asked
                        memory = p.memory_full_info()
                        rss, uss = rss + memory.rss, uss + memory.uss
                    else:
                        rss += p.memory_info().rss
                    times = p.cpu_times()
                    cpu += times.user + times.system
            self.rss = rss
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_uss = max(self.peak_uss, uss)
            self.cpu_s = max(self.cpu_s, cpu)  # a child that exited takes its CPU time with it


@dataclass
class Processes:
    """The processes of a run by name, sampled together (RSS peaks, CPU seconds)."""

    watched: dict[str, Watched] = field(default_factory=dict)

    def add(self, name: str, pid: int) -> Watched:
        self.watched[name] = Watched(name, psutil.Process(pid))
        return self.watched[name]

    def sample(self, private: bool = False) -> None:
        for w in self.watched.values():
            w.sample(private)

    def cpu(self) -> dict[str, float]:
        self.sample()
        return {name: w.cpu_s for name, w in self.watched.items()}

    async def run(self, stop: asyncio.Event, every_s: float = 0.5) -> None:
        while not stop.is_set():
            self.sample()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (Kafka's or MinIO's, to watch it)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, e.g. ``1.20 / 0.90 / 0.70``."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def report(name: str, title: str, result: dict[str, object], summary: str = "") -> None:
    """Print a result as a Markdown table and write ``bench/results/<name>.json`` and ``.md``
    (``summary``, e.g. the figures against their targets, above the full table)."""
    table = "\n".join(["| measure | value |", "|---|---|"] + [
        f"| {key} | {value:,} |" if isinstance(value, int) else f"| {key} | {value} |" for key, value in result.items()
    ])
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **result}
    (RESULTS / f"{name}.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    (RESULTS / f"{name}.md").write_text(f"# {title}\n\n{summary + chr(10) if summary else ''}## Every figure\n\n{table}\n")
    print(table)
    if summary:
        print(f"\n{summary}")
    print(f"\nwritten to {RESULTS / name}.json and .md")
