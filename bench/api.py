"""API benchmark: latency under load, CPU while idle and while following the gold topic, and every
endpoint's p99 on a lake with a long quality history.

A throw-away stack is filled by the real pipeline (an hour of orders through silver_refiner and
gold_aggregator); the API runs as its own process, and so does the load: vegeta (compiled, built into
``.stack/bin`` by ``scripts/provision.sh``) in a closed loop of 32 workers, each with a keep-alive
connection, over a mix of aggregates queries (three aggregates, random time ranges, page sizes and
dimension filters, and pages further on by cursor). Cases:

- ``latency``: the aggregates endpoint at 32 concurrent clients: p50/p95/p99 and requests/s (target p99 <= 50 ms).
- ``cpu``: CPU-seconds per minute of the api process following the gold topic (a producer at 400 events/s
  through the pipeline), then idle (the producer stopped, the pipeline quiet). With ``BENCH_API_BASELINE=<commit>``
  that commit's API runs beside this tree's on the same stack and is measured in the same minutes.
- ``history``: the dq and quarantine tables given ``HISTORY_DAYS`` days of history (a commit per hour, so
  a file per hour per table), then every GET endpoint's p99 at 8 clients (target < 1 s each), and the
  slowest quality answer right after a new commit (when no kept answer serves).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pyarrow as pa

from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.config import StackSettings
from archlab.devstack.launcher import launch
from archlab.devstack.services import service
from archlab.ingest.produce import produce_synthetic
from archlab.lake.tables import Tables
from archlab.pipeline.silver.tables import DqEncoder, QuarantineEncoder
from archlab.testing.processes import ServiceProcess, free_ports
from bench.common import copy_contract, fresh_dataset, load_average, report, stack_env, throwaway_stack

CLIENTS = 32
DURATION_S = 20.0
TARGET_P99_MS = 50.0
DISTINCT_QUERIES = 300
CPU_PHASE_S = 60.0
FOLLOW_RATE = 400
HISTORY_DAYS = 30
HISTORY_CLIENTS = 8
HISTORY_DURATION_S = 10.0
TARGET_ENDPOINT_P99_MS = 1000.0
AFTER_COMMITS = 3
AGGREGATES = ("by_category_1m", "by_country_1m", "totals_1h")


def vegeta_binary() -> Path:
    binary = StackSettings().stack_home / "bin" / "vegeta"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run `make provision` (scripts/provision.sh builds it)")
    return binary


def attack(urls: list[str], clients: int, duration_s: float, timeout_s: float = 10.0) -> dict[str, Any]:
    """vegeta in a closed loop of ``clients`` workers over ``urls`` (round robin) for ``duration_s``:
    its JSON report (latencies in ns, throughput in requests/s, status codes)."""
    binary = vegeta_binary()
    with tempfile.NamedTemporaryFile("w", suffix=".targets", delete=False) as targets:
        targets.write("\n\n".join(f"GET {url}" for url in urls) + "\n")
    try:
        attacked = subprocess.run(  # noqa: S603 - our own binary and arguments
            [str(binary), "attack", f"-targets={targets.name}", "-rate=0", f"-workers={clients}",
             f"-max-workers={clients}", f"-duration={duration_s}s", f"-timeout={timeout_s}s", "-keepalive=true"],
            check=True, capture_output=True)
        reported = subprocess.run([str(binary), "report", "-type=json"], input=attacked.stdout,  # noqa: S603
                                  check=True, capture_output=True)
    finally:
        os.unlink(targets.name)
    return orjson.loads(reported.stdout)


def figures(report_: dict[str, Any], prefix: str = "") -> dict[str, object]:
    latencies = report_["latencies"]
    ms = lambda key: round(latencies[key] / 1e6, 1)  # noqa: E731
    errors = sum(n for code, n in report_.get("status_codes", {}).items() if code != "200")
    return {f"{prefix}requests": report_["requests"], f"{prefix}errors": errors,
            f"{prefix}requests_per_s": round(report_["throughput"]), f"{prefix}p50_ms": ms("50th"),
            f"{prefix}p95_ms": ms("95th"), f"{prefix}p99_ms": ms("99th"), f"{prefix}max_ms": ms("max")}


def _wait_for_gold(base: str, dataset: str, timeout: float = 300) -> int:
    """Until the API serves windows and their number stops growing; returns it."""
    deadline = time.monotonic() + timeout
    previous = -1
    with httpx.Client(base_url=base, timeout=10) as http:
        while time.monotonic() < deadline:
            try:
                if http.get("/readyz").status_code == 200:
                    count = sum(len(http.get(f"/v1/datasets/{dataset}/aggregates/{a}", params={"limit": 1000})
                                    .json()["items"]) for a in AGGREGATES)
                    if count and count == previous:
                        return count
                    previous = count
            except httpx.HTTPError:
                pass
            time.sleep(5)
    raise RuntimeError("the pipeline did not fill gold in time")


def _query_urls(base: str, dataset: str, rng: random.Random, start: datetime) -> list[str]:
    """The aggregates query mix, and for about a third of the queries with a next page, that page too."""
    categories = ["books", "electronics", "fashion", "home", "grocery", "beauty", "sports"]
    countries = ["DE", "FR", "GB", "US", "ES", "IT", "NL"]
    urls = []
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(DISTINCT_QUERIES):
            aggregate = rng.choice(AGGREGATES)
            params = {"limit": str(rng.choice([20, 100, 500]))}
            if rng.random() < 0.7:
                begin = start + timedelta(minutes=rng.randrange(0, 60))
                params["from"] = begin.isoformat().replace("+00:00", "Z")
                params["to"] = (begin + timedelta(minutes=rng.choice([5, 15, 60]))).isoformat().replace("+00:00", "Z")
            if aggregate == "by_category_1m" and rng.random() < 0.5:
                params["category"] = rng.choice(categories)
            if aggregate == "by_country_1m" and rng.random() < 0.5:
                params["country"] = rng.choice(countries)
            page = http.get(f"/v1/datasets/{dataset}/aggregates/{aggregate}", params=params)
            urls.append(str(page.url))
            cursor = page.json()["next_cursor"]
            if cursor and rng.random() < 0.3:
                urls.append(str(page.url.copy_merge_params({"cursor": cursor})))
    return urls


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children."""
    proc = psutil.Process(pid)
    return sum(p.cpu_times().user + p.cpu_times().system for p in [proc, *proc.children(recursive=True)])


def _cpu_per_minute(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU-seconds per minute of each process over the next ``seconds``."""
    before = {name: _cpu_s(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: round((_cpu_s(pid) - before[name]) * 60 / seconds, 2) for name, pid in pids.items()}


@contextmanager
def _baseline_api(commit: str, env: dict[str, str], folder: Path) -> Iterator[Any]:
    """The API of ``commit`` (its tree exported from git) as a process on its own port: (process, base URL)."""
    tree = folder / f"api-{commit[:12]}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit, "archlab", "services", "contracts"],  # noqa: S603, S607
                             cwd=PROJECT_ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    (port,) = free_ports(1)
    process = launch(service("api").command(), log=folder / "api-baseline.log", cwd=tree,
                     env={**env, "LAB_API_PORT": str(port), "PYTHONPATH": str(tree)})
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.kill()


def fill_quality_history(tables: Tables, dataset: str, hours: int, seed: int = 5, last: datetime | None = None) -> int:
    """``hours`` hours of dq and quarantine rows up to the hour before ``last`` (default: now), a commit per
    hour per table (a file per hour): what a long-running pipeline leaves when maintenance has not
    compacted yet. Returns the commits."""
    rng = random.Random(seed)
    dq_target, quarantine_target = DqEncoder().targets(dataset)[0], QuarantineEncoder().targets(dataset)[0]
    dq = tables.ensure(dq_target.path, dq_target.schema, dq_target.partition_by)
    quarantine = tables.ensure(quarantine_target.path, quarantine_target.schema, quarantine_target.partition_by)
    first = (last or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
    checks = [("not_null", "amount"), ("range", "quantity"), ("parse", None), ("enum", "country")]
    for hour in range(hours):
        moment = first + timedelta(hours=hour)
        minutes = [moment + timedelta(minutes=m) for m in range(60)]
        tables.append(dq, pa.Table.from_pylist([{
            "dataset": dataset, "minute": minute, "rule": rule, "passed": 400, "failed": rng.randrange(5),
            "warned": rng.randrange(3), "records": 405, "dt": minute.date()}
            for minute in minutes for rule in ("duplicates", "amount_positive", "country_known")], dq_target.schema), [])
        tables.append(quarantine, pa.Table.from_pylist([{
            "dataset": dataset, "contract_version": 1, "source_partition": 0, "source_offset": hour * 200 + i,
            "kafka_timestamp": moment + timedelta(seconds=18 * i), "payload": '{"order_id": "x"}',
            "payload_encoding": "utf-8", "reasons": [
                {"check": c, "field": f, "message": "refused"} for c, f in rng.sample(checks, rng.randint(1, 2))],
            "dt": moment.date()} for i in range(200)], quarantine_target.schema), [])
    return hours * 2


def _endpoint_urls(base: str, dataset: str) -> dict[str, list[str]]:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    hour_ago = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    week_ago = (now - timedelta(days=7, minutes=13)).isoformat().replace("+00:00", "Z")
    ds = f"{base}/v1/datasets/{dataset}"
    return {
        "quality (whole history)": [f"{ds}/quality"],
        "quality (last hour)": [f"{ds}/quality?from={hour_ago}"],
        "quality (last week, cut minutes)": [f"{ds}/quality?from={week_ago}"],
        "kpis": [f"{ds}/kpis"],
        "aggregates": [f"{ds}/aggregates/by_category_1m?limit=100"],
        "pipeline": [f"{base}/v1/pipeline"],
        "tables": [f"{base}/v1/tables"],
        "table history": [f"{base}/v1/tables/{names.table_path('quarantine', dataset)}/history?limit=20"],
        "datasets": [f"{base}/v1/datasets"],
    }


async def _run(events: int) -> dict[str, object]:
    baseline = os.environ.get("BENCH_API_BASELINE")
    with throwaway_stack() as (_, settings), tempfile.TemporaryDirectory(prefix="lab-bench-api-") as folder:
        dataset = await fresh_dataset(settings)
        contracts = copy_contract(Path(folder) / "contracts", dataset)
        (port,) = free_ports(1)
        env = stack_env(settings, LAB_DATASETS=dataset, LAB_CONTRACTS_DIR=str(contracts), LAB_FLUSH_INTERVAL_S="1",
                        LAB_API_PORT=str(port), LAB_API_HOST="127.0.0.1", LAB_LOG_LEVEL="WARNING")
        await produce_synthetic(settings, "orders", count=events, rate=0, seed=7, history=timedelta(hours=1),
                                topic=names.raw_topic(dataset))
        procs = [ServiceProcess(name, env, Path(folder) / f"{name}.log")
                 for name in ("silver_refiner", "gold_aggregator", "api")]
        base = f"http://127.0.0.1:{port}"
        result: dict[str, object] = {"events": events, "load_average_at_start": load_average()}
        try:
            with _baseline_or_none(baseline, env, Path(folder)) as other:
                result["gold_windows"] = await asyncio.to_thread(_wait_for_gold, base, dataset)
                result |= await _cpu_case(settings, dataset, procs[2].pid, other)
                procs[0].terminate()  # the pipeline has finished; only the API competes for the CPU now
                procs[1].terminate()
                result |= _latency_case(base, dataset, other)
                tables = Tables.from_settings(settings)
                result["history_commits"] = await asyncio.to_thread(fill_quality_history, tables, dataset,
                                                                    HISTORY_DAYS * 24)
                result |= _history_case(base, dataset, tables, other)
        finally:
            for proc in procs:
                proc.kill9()
    return result


@contextmanager
def _baseline_or_none(commit: str | None, env: dict[str, str], folder: Path) -> Iterator[tuple[Any, str] | None]:
    if not commit:
        yield None
        return
    with _baseline_api(commit, env, folder) as started:
        yield started


async def _cpu_case(settings: Settings, dataset: str, api_pid: int, other: tuple[Any, str] | None,
                    ) -> dict[str, object]:
    """CPU-seconds per minute of the api (and of the baseline's) following a live stream, then idle."""
    pids = {"api": api_pid} | ({"api_baseline": other[0].pid} if other else {})
    stop = asyncio.Event()
    producer = asyncio.create_task(produce_synthetic(settings, "orders", count=0, rate=FOLLOW_RATE, seed=11,
                                                     stop=stop, topic=names.raw_topic(dataset)))
    await asyncio.sleep(15)  # the stream reaches gold
    following = await asyncio.to_thread(_cpu_per_minute, pids, CPU_PHASE_S)
    stop.set()
    await producer
    await asyncio.sleep(15)  # the pipeline drains
    idle = await asyncio.to_thread(_cpu_per_minute, pids, CPU_PHASE_S)
    return {**{f"{name}_cpu_s_per_min_following_{FOLLOW_RATE}_per_s": v for name, v in following.items()},
            **{f"{name}_cpu_s_per_min_idle": v for name, v in idle.items()}}


def _latency_case(base: str, dataset: str, other: tuple[Any, str] | None) -> dict[str, object]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    urls = _query_urls(base, dataset, random.Random(3), start)
    result: dict[str, object] = {"clients": CLIENTS, "duration_s": DURATION_S, "distinct_urls": len(urls),
                                 **figures(attack(urls, CLIENTS, DURATION_S)), "target_p99_ms": TARGET_P99_MS}
    if other:
        result |= figures(attack([u.replace(base, other[1]) for u in urls], CLIENTS, DURATION_S), "baseline_")
    return result


def _history_case(base: str, dataset: str, tables: Tables, other: tuple[Any, str] | None) -> dict[str, object]:
    result: dict[str, object] = {"history_clients": HISTORY_CLIENTS}
    for label, urls in _endpoint_urls(base, dataset).items():
        measured = figures(attack(urls, HISTORY_CLIENTS, HISTORY_DURATION_S, timeout_s=60))
        result[f"{label}: p99_ms"] = measured["p99_ms"]
        result[f"{label}: errors"] = measured["errors"]
        if other and label.startswith("quality"):
            measured = figures(attack([u.replace(base, other[1]) for u in urls], 2, HISTORY_DURATION_S, timeout_s=60))
            result[f"{label}: baseline p99_ms"] = measured["p99_ms"]
    quality = [urls[0] for label, urls in _endpoint_urls(base, dataset).items() if label.startswith("quality")]
    for name, root in [("", base), *([("baseline ", other[1])] if other else [])]:
        slowest = _quality_after_commits(tables, dataset, [u.replace(base, root) for u in quality])
        result[f"quality right after a commit ({AFTER_COMMITS} commits): {name}max_ms"] = slowest
    result["target_endpoint_p99_ms"] = TARGET_ENDPOINT_P99_MS
    return result


def _quality_after_commits(tables: Tables, dataset: str, urls: list[str]) -> float:
    """The slowest answer of the quality URLs each asked once right after a new commit of the dq and
    quarantine tables (a cached answer no longer serves): what a request costs while the pipeline writes."""
    slowest = 0.0
    with httpx.Client(timeout=120) as http:
        for _ in range(AFTER_COMMITS):
            fill_quality_history(tables, dataset, hours=1, last=datetime.now(UTC))
            time.sleep(2.2)  # past LAB_API_LAKE_REFRESH_S, so that the API looks at the tables again
            for url in urls:
                started = time.perf_counter()
                http.get(url).raise_for_status()
                slowest = max(slowest, time.perf_counter() - started)
    return round(slowest * 1000, 1)


def main(events: int = 30_000) -> None:
    result = asyncio.run(_run(events))
    report("api", "API: aggregates at 32 concurrent clients (vegeta), CPU idle and following, every endpoint "
                  f"on {HISTORY_DAYS} days of quality history", result)
