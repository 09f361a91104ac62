"""Why silver_refiner is not a faust-streaming app: faust's read rate of a raw topic, batched with
``Stream.take_events`` as the refiner would be, against a bare aiokafka read of the same topic in
the same run. The faust side does nothing with the events, so its rate bounds any faust refiner.

    .venv/bin/python -m bench faust --events 200000

The worker runs as its own process (faust's ``Worker`` owns the event loop and the signals) and
writes its figures to a JSON file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.ingest.produce import produce_synthetic
from bench.common import consume_only_rate, fresh_dataset, report, throwaway_stack

TAKE = 20_000  # the refiner's batch size (LAB_REFINE_BATCH)
WITHIN_S = 0.2


def _worker(bootstrap: str, topic: str, events: int, datadir: str, result: str) -> None:
    """Consume ``events`` records of ``topic`` with faust, write the rate to ``result`` and exit."""
    import faust  # only this process needs it

    app = faust.App(f"faust-limit-{topic}", broker=f"kafka://{bootstrap}", web_enabled=False, datadir=datadir,
                    consumer_auto_offset_reset="earliest", broker_commit_every=10**9, broker_commit_interval=10**6)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen, started = 0, 0.0

    @app.agent(source)
    async def read(stream):  # type: ignore[no-untyped-def]
        nonlocal seen, started
        async for batch in stream.take_events(TAKE, within=WITHIN_S):
            started = started or time.perf_counter()  # from the first batch: start-up and rebalance excluded
            seen += len(batch)
            if seen >= events:
                elapsed = time.perf_counter() - started
                Path(result).write_bytes(orjson.dumps({"events": seen, "seconds": elapsed}))
                os._exit(0)

    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


async def _measure(events: int) -> dict[str, object]:
    with throwaway_stack() as (_, settings):
        dataset = await fresh_dataset(settings)
        topic = names.raw_topic(dataset)
        await produce_synthetic(settings, "orders", count=events, rate=0, seed=1, topic=topic)
        consumed, consume_s = await consume_only_rate(settings, topic)
        faust = await asyncio.to_thread(_run_worker, settings, topic, events)
    aiokafka_rate = consumed / consume_s
    faust_rate = faust["events"] / faust["seconds"]
    return {
        "events": events,
        "aiokafka_getmany_events_per_s": round(aiokafka_rate),
        "faust_take_events_per_s": round(faust_rate),
        "faust_over_aiokafka": round(faust_rate / aiokafka_rate, 3),
        "faust_take": TAKE,
        "faust_within_s": WITHIN_S,
    }


def _run_worker(settings: Settings, topic: str, events: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lab-faust-") as folder:
        result = Path(folder) / "result.json"
        args = (settings.kafka_bootstrap, topic, events, folder, str(result))
        code = f"from bench.faust_limit import _worker; _worker{args!r}"
        done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, timeout=900,
                              check=False)
        if done.returncode != 0 or not result.exists():
            output = (done.stdout + done.stderr).decode()[-3000:]
            raise RuntimeError(f"the faust worker failed ({done.returncode}):\n{output}")
        return orjson.loads(result.read_bytes())


def main(events: int = 200_000) -> None:
    report("faust", "faust-streaming read limit", asyncio.run(_measure(events)))
