"""The steady case (issue #14, item 3): the whole system as ``make up`` runs it, at its default demo
rate, measured over N seconds of steady state. How much of the machine does watching it live cost?

    .venv/bin/python -m bench pipeline --steady --steady-seconds 300      (make bench-steady)

On a throw-away native stack every registered service (``archlab.devstack.services.SERVICES``:
producer, the pipeline stages, api, ui, notebooks) runs as ``make up`` runs it: the settings of a
fresh checkout's ``.env`` (``.env.example``: datasets orders and sensors, 200 events/s each, its
flush interval and log level) with only the servers' addresses and ports replaced. After a warm-up
(every stage has started and caught up with the first seconds), the CPU time of each process (with
its children; psutil ``cpu_times`` deltas) over the window is reported as a fraction of one core,
and the total against the target of half a core; RSS is sampled every second (peak and last).
Kafka's and MinIO's processes are counted too. The dashboard has no browser session here: its
cost is that of an idle Streamlit server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid

import httpx
import psutil

from archlab.core import names
from archlab.core.settings import ENV_FILE_VARIABLE, PROJECT_ROOT
from archlab.devstack.services import SERVICES
from archlab.kafka.lag import LagProbe, lag_of, settled_offsets
from archlab.kafka.topics import ensure_topics
from archlab.testing.processes import ServiceProcess, free_ports
from bench import history, targets
from bench.common import RESULTS, Processes, listener_pid, load_average, report, stack_env, throwaway_stack

DEMO_DATASETS = ("orders", "sensors")  # .env.example's LAB_DATASETS
TARGET_CORES = 0.5
STOP_GRACE_S = 20.0


async def _wait_for_api(api: str, running: dict[str, ServiceProcess], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            _check_alive(running)
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{api}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the api was not ready after {timeout} s")


def _check_alive(running: dict[str, ServiceProcess]) -> None:
    for name, process in running.items():
        if not process.alive():
            raise RuntimeError(f"{name} exited during the steady run; its log:\n{process.log_tail()}")


async def _lag_per_group(probe: LagProbe) -> dict[str, int]:
    """Every consumer group's lag over the partitions it has committed: does the pipeline keep up?"""
    lags = {}
    for group in await probe.groups():
        committed = await probe.committed(group)
        ends = settled_offsets(await probe.end_offsets({tp.topic for tp in committed}))
        lags[group] = sum(lag_of(ends, committed).values())
    return lags


async def _raw_records(probe: LagProbe) -> int:
    return sum((await probe.end_offsets([names.raw_topic(ds) for ds in DEMO_DATASETS])).values())


async def measure_steady(seconds: float, warmup_s: float) -> dict[str, object]:
    load_before = load_average()
    # State of its own: with the checkpoint an earlier run left, gold_aggregator loaded it (then found it
    # ahead of the new topics and dropped it) and began a run after a 30-minute one at ~600 MB, not ~430.
    with throwaway_stack("lake") as (_, settings), tempfile.TemporaryDirectory(prefix="lab-steady-state-") as state:
        await ensure_topics(settings, DEMO_DATASETS)
        logs = RESULTS / "steady-logs"
        logs.mkdir(parents=True, exist_ok=True)
        api_port, ui_port, notebook_port, *metrics = free_ports(3 + len(SERVICES))
        # make up's services read the settings file `lab up` read: a fresh checkout's .env is .env.example
        env = stack_env(settings, **{ENV_FILE_VARIABLE: str(PROJECT_ROOT / ".env.example")},
                        LAB_API_HOST="127.0.0.1", LAB_API_URL=f"http://127.0.0.1:{api_port}",
                        LAB_NOTEBOOK_TOKEN=uuid.uuid4().hex, LAB_INSTANCE_ID="steady",
                        LAB_STATE_DIR=f"{state}/gold", LAB_OBSERVER_STATE_DIR=f"{state}/observer")
        http_ports = {"api": api_port, "ui": ui_port, "notebooks": notebook_port}
        procs = Processes()
        for name, port in (("kafka", settings.kafka_bootstrap), ("minio", settings.s3_endpoint)):
            if (pid := listener_pid(int(port.rsplit(":", 1)[1]))) is not None:
                procs.add(name, pid)
        running: dict[str, ServiceProcess] = {}
        try:
            for service, metrics_port in zip(SERVICES, metrics, strict=True):
                service_env = {**env, **service.env(metrics_port=metrics_port if service.metrics else None,
                                                    http_port=http_ports.get(service.name))}
                running[service.name] = ServiceProcess(service.name, service_env, logs / f"{service.name}.log")
                procs.add(service.name, running[service.name].pid)
            await _wait_for_api(f"http://127.0.0.1:{api_port}", running)
            print(f"[steady] every service is up; warming up for {warmup_s:.0f} s", flush=True)
            await asyncio.sleep(warmup_s)
            _check_alive(running)
            async with LagProbe(settings) as probe:
                raw_before = await _raw_records(probe)
                cpu_before, machine_before, started = procs.cpu(), psutil.cpu_times(), time.perf_counter()
                for name in procs.watched:
                    procs.watched[name].peak_rss = 0  # the window's peak, not the start-up's
                print(f"[steady] measuring for {seconds:.0f} s", flush=True)
                deadline = started + seconds
                while (left := deadline - time.perf_counter()) > 0:
                    await asyncio.sleep(min(1.0, left))
                    procs.sample(private=True)
                    _check_alive(running)
                cpu_after, machine_after, elapsed = procs.cpu(), psutil.cpu_times(), time.perf_counter() - started
                raw_rate = (await _raw_records(probe) - raw_before) / elapsed
                lags = await _lag_per_group(probe)
        finally:
            for process in running.values():
                process.terminate(STOP_GRACE_S)
    cores = {name: (cpu_after[name] - cpu_before.get(name, 0.0)) / elapsed for name in cpu_after}
    total = sum(cores.values())
    machine_busy = (sum(machine_after) - sum(machine_before) - (machine_after.idle - machine_before.idle)
                    - (machine_after.iowait - machine_before.iowait)) / elapsed
    return {
        "steady_seconds": round(elapsed),
        "warmup_s": round(warmup_s),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "cpus": os.cpu_count(),
        "raw_events_per_s": round(raw_rate),
        "steady_cores[total]": round(total, 3),
        "target_cores": TARGET_CORES,
        **{f"steady_cores[{name}]": round(used, 3) for name, used in sorted(cores.items(), key=lambda kv: -kv[1])},
        "steady_cores[other processes on the machine]": round(max(0.0, machine_busy - total), 3),
        **{f"steady_peak_rss_mb[{name}]": round(w.peak_rss / 2**20) for name, w in procs.watched.items()},
        **{f"steady_last_rss_mb[{name}]": round(w.rss / 2**20) for name, w in procs.watched.items()},
        **{f"steady_peak_uss_mb[{name}]": round(w.peak_uss / 2**20) for name, w in procs.watched.items()},
        **{f"lag_at_end[{group}]": lag for group, lag in lags.items()},
    }


def main(seconds: float = 300.0, warmup_s: float = 30.0) -> None:
    result = asyncio.run(measure_steady(seconds, warmup_s))
    report("steady", "Steady: the whole system at the demo rate (make up), CPU and RSS per process", result,
           summary=targets.table(result, "steady"))
    history.append(result, "steady")
    print(f"history: {history.HISTORY} and {history.PLOT.name}")
