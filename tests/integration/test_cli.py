"""The `lab` command against the real stack: tail shows records safely, status adds up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest

from archlab.core.settings import Settings
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from tests.integration.conftest import bronze_rows, wait_until

pytestmark = pytest.mark.integration


def lab(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archlab.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


async def test_tail_prints_partition_offset_and_values_safely(settings: Settings, fresh_dataset: str) -> None:
    dirty = DirtyRates(non_utf8=0.3, malformed_json=0.3)
    await produce_synthetic(settings, "orders", count=40, rate=0, seed=4, dirty=dirty, topic=f"{fresh_dataset}.raw")
    done = await asyncio.to_thread(lab, "tail", f"{fresh_dataset}.raw", "--from-beginning", "-n", "40")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count(" key=") == 40
    assert all(f"p{p} @" in out for p in range(4)), out[:500]
    assert '"order_id":' in out  # JSON values are pretty-printed
    assert "base64:" in out  # bytes that are not UTF-8 are shown safely


async def test_tail_of_a_missing_topic_says_so(settings: Settings) -> None:
    done = await asyncio.to_thread(lab, "tail", "nope.raw", "-n", "1")
    assert done.returncode == 2 and "does not exist" in done.stderr


async def test_status_reports_end_offsets_lag_and_lake_rows(
    settings: Settings, lake, fresh_dataset: str, start_service
) -> None:
    await produce_synthetic(settings, "orders", count=500, rate=0, seed=6, topic=f"{fresh_dataset}.raw")
    sink = start_service("bronze_sink", LAB_DATASETS=fresh_dataset, LAB_BRONZE_GROUP=f"bronze-{fresh_dataset}",
                         LAB_FLUSH_INTERVAL_S="0.5")
    await asyncio.to_thread(wait_until, lambda: len(bronze_rows(lake, fresh_dataset)) == 500, 60, "bronze")
    await asyncio.sleep(1)  # the commit follows the write
    done = await asyncio.to_thread(lab, "status", "--json", LAB_DATASETS=fresh_dataset)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["topics"][f"{fresh_dataset}.raw"] == 500
    assert report["consumer_groups"][f"bronze-{fresh_dataset}"][f"{fresh_dataset}.raw"] == 0
    assert report["lake"][f"bronze/{fresh_dataset}"]["rows"] == 500
    assert report["lake"][f"silver/{fresh_dataset}"] == {"objects": 0, "rows": 0}
    assert sink.terminate() == 0
