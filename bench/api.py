"""API benchmark: latency and throughput of the aggregates endpoint at 32 concurrent clients.

A throw-away stack is filled by the real pipeline (an hour of orders through silver_refiner and
gold_aggregator), then the API runs as its own process and 32 aiohttp clients, each with one
keep-alive connection, send a mix of aggregates queries (three aggregates, random time ranges, page
sizes and dimension filters, some following a page's cursor) for a fixed time. Target: p99 <= 50 ms.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from archlab.core import names
from archlab.ingest.produce import produce_synthetic
from archlab.testing.processes import ServiceProcess, free_ports
from bench.common import copy_contract, fresh_dataset, report, stack_env, throwaway_stack

CLIENTS = 32
DURATION_S = 20.0
TARGET_P99_MS = 50.0
DISTINCT_QUERIES = 300


async def _wait_for_gold(http: aiohttp.ClientSession, base: str, url: str, timeout: float = 300) -> int:
    """Until the API serves windows and their number stops growing; returns it."""
    deadline = time.monotonic() + timeout
    previous = -1
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{base}/readyz") as ready:
                if ready.status == 200:
                    count = 0
                    for aggregate in ("by_category_1m", "by_country_1m", "totals_1h"):
                        async with http.get(f"{url}/{aggregate}", params={"limit": 1000}) as page:
                            count += len((await page.json())["items"])
                    if count and count == previous:
                        return count
                    previous = count
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(5)
    raise RuntimeError("the pipeline did not fill gold in time")


def _queries(rng: random.Random, start: datetime) -> list[tuple[str, dict[str, str]]]:
    categories = ["books", "electronics", "fashion", "home", "grocery", "beauty", "sports"]
    countries = ["DE", "FR", "GB", "US", "ES", "IT", "NL"]
    queries = []
    for _ in range(DISTINCT_QUERIES):
        aggregate = rng.choice(["by_category_1m", "by_country_1m", "totals_1h"])
        params = {"limit": str(rng.choice([20, 100, 500]))}
        if rng.random() < 0.7:
            begin = start + timedelta(minutes=rng.randrange(0, 60))
            params["from"] = begin.isoformat().replace("+00:00", "Z")
            params["to"] = (begin + timedelta(minutes=rng.choice([5, 15, 60]))).isoformat().replace("+00:00", "Z")
        if aggregate == "by_category_1m" and rng.random() < 0.5:
            params["category"] = rng.choice(categories)
        if aggregate == "by_country_1m" and rng.random() < 0.5:
            params["country"] = rng.choice(countries)
        queries.append((aggregate, params))
    return queries


async def _load(url: str, queries: list[tuple[str, dict[str, str]]]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + DURATION_S

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            while time.perf_counter() < stop_at:
                aggregate, params = rng.choice(queries)
                started = time.perf_counter()
                async with http.get(f"{url}/{aggregate}", params=params) as response:
                    body = await response.json()
                latencies.append(time.perf_counter() - started)
                if response.status != 200:
                    errors += 1
                elif body["next_cursor"] and rng.random() < 0.3:  # follow one page further
                    started = time.perf_counter()
                    async with http.get(f"{url}/{aggregate}", params={**params, "cursor": body["next_cursor"]}) as page:
                        await page.read()
                        errors += page.status != 200
                    latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return latencies, errors, time.perf_counter() - began


async def _run(events: int) -> dict[str, object]:
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
        try:
            url = f"http://127.0.0.1:{port}/v1/datasets/{dataset}/aggregates"
            async with aiohttp.ClientSession() as http:
                windows = await _wait_for_gold(http, f"http://127.0.0.1:{port}", url)
            procs[0].terminate()  # the pipeline has finished; only the API competes for the CPU now
            procs[1].terminate()
            queries = _queries(random.Random(3), datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1))
            latencies, errors, elapsed = await _load(url, queries)
        finally:
            for proc in procs:
                proc.kill9()
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[int(len(ms) * 0.99) - 1]
    return {
        "events": events, "gold_windows": windows, "clients": CLIENTS, "duration_s": round(elapsed, 1),
        "distinct_queries": DISTINCT_QUERIES, "requests": len(ms), "errors": errors,
        "requests_per_s": round(len(ms) / elapsed), "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(p99, 1), "max_ms": round(ms[-1], 1), "target_p99_ms": TARGET_P99_MS,
    }


def main(events: int = 30_000) -> None:
    result = asyncio.run(_run(events))
    report("api", "API: aggregates endpoint at 32 concurrent clients", result)
