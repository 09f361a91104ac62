"""Factories for integration tests: a fresh dataset (its own topics and lake tables) per test,
service processes that can be killed, and readers of what landed."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import duckdb
import pytest

from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.kafka.clients import read_all as read_all  # for the tests that import it from here
from archlab.kafka.topics import ensure_topics
from archlab.lake.store import Lake
from archlab.lake.tables import Tables
from archlab.streaming.readiness import metric_total, owns_partitions
from archlab.testing import processes
from archlab.testing.verify import bronze_rows as bronze_rows  # for the tests that import it from here
from archlab.testing.verify import landed_exactly_once

ARTIFACTS = PROJECT_ROOT / "test-artifacts"


@pytest.fixture
def lake(settings: Settings) -> Lake:
    return Lake.from_settings(settings)


@pytest.fixture
def tables(settings: Settings) -> Tables:
    """The lake's Delta tables: how every test reads a layer (a snapshot, never a folder's files)."""
    return Tables.from_settings(settings)


@pytest.fixture
async def fresh_dataset(settings: Settings) -> str:
    """A dataset name no other test uses, with its four topics created."""
    name = f"t{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, [name])
    return name


class ServiceProcess(processes.ServiceProcess):
    """A registered service started for a test (the launcher's process group and log), that a
    test can also wait on until it works."""

    metrics_port = 0  # its LAB_METRICS_PORT, chosen by start_service

    async def working(self, timeout: float = 60, topic_pattern: str = r"\.raw") -> None:
        """Wait until the service owns partitions of its input topics (its readiness gauge, read from its
        metrics endpoint), so that a kill hits it mid-work."""
        await asyncio.to_thread(
            wait_until, lambda: owns_partitions(self.metrics_port, topic_pattern), timeout,
            f"{self.name} to own partitions of {topic_pattern!r}\n{self.log_tail()}", interval=0.1,
        )

    def metric(self, name: str, **labels: str) -> float:
        """The sum of its samples ``name`` with these labels, read now from its metrics endpoint (0: none,
        or it does not answer). A killed process's counters are gone: read them before the kill."""
        return metric_total(self.metrics_port, name, **labels)


@pytest.fixture
def start_service(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServiceProcess]]:
    """Start services with extra LAB_* variables; every one is killed at teardown."""
    started: list[ServiceProcess] = []
    ARTIFACTS.mkdir(exist_ok=True)

    def start(name: str, **env: str) -> ServiceProcess:
        full_env = {**os.environ, "LAB_METRICS_PORT": str(processes.free_port()), **env}
        log_path = ARTIFACTS / f"{request.node.name}-{name}-{len(started)}.log"
        service = ServiceProcess(name, full_env, log_path)
        service.metrics_port = int(full_env["LAB_METRICS_PORT"])
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


async def kill9_repeatedly(
    start: Callable[[], ServiceProcess], times: int, seed: int, topic_pattern: str = r"\.raw",
    pause: tuple[float, float] = (0.3, 2.0), before_kill: Callable[[ServiceProcess], object] | None = None,
) -> ServiceProcess:
    """Start a service, then ``times`` times: wait until it works, kill -9 it at a random moment,
    start it again. Returns the last instance, still running. ``before_kill`` sees each instance just
    before its kill (e.g. to read its metrics, which die with it)."""
    rng = random.Random(seed)
    service = start()
    for _ in range(times):
        await service.working(topic_pattern=topic_pattern)
        await asyncio.sleep(rng.uniform(*pause))
        if before_kill is not None:
            await asyncio.to_thread(before_kill, service)
        service.kill9()
        service = start()
    return service


async def read_topic(settings: Settings, topic: str) -> dict[tuple[int, int], bytes]:
    """Every committed record of a topic as {(partition, offset): value}."""
    return {(r.partition, r.offset): r.value for r in await read_all(settings, topic)}


def wait_until(condition: Callable[[], bool], timeout: float, what: str | Callable[[], str],
               interval: float = 0.5) -> None:
    """Poll ``condition``; a DuckDB error (e.g. a table read while it is being created) counts as 'not yet'.
    ``what`` may be a function, called only on time-out (e.g. to include a service's log as it is then)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except duckdb.Error as exc:
            last_error = exc
        time.sleep(interval)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {described} (last error: {last_error})")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str | Callable[[], str],
                     interval: float = 0.5) -> None:
    """``wait_until`` for an async ``check`` (e.g. one that reads a topic)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        await asyncio.sleep(interval)


def assert_exactly_once(rows: list[tuple[int, int, bytes]], sent: dict[tuple[int, int], bytes]) -> None:
    """Each sent (partition, offset) landed exactly once with byte-identical value, nothing else."""
    problems = landed_exactly_once(rows, sent)
    assert not problems, "; ".join(problems)
