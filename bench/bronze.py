"""bronze_sink landed events/s against the consume-only rate of the same topic, same run; then the Delta
commit latency (p50/p99 of ``lab_lake_commit_seconds``) and the bronze table's files, as landed and after
one maintenance pass.

    .venv/bin/python -m bench bronze --events 1000000
"""

from __future__ import annotations

import asyncio

from archlab.core import names
from archlab.core.settings import Settings
from archlab.lake.maintenance import MaintenancePolicy, maintain
from archlab.lake.tables import Tables
from archlab.pipeline.bronze import BronzeEncoder
from archlab.streaming.lake_sink import COMMIT_SECONDS, land
from bench.common import against_consume_only, report

LAYER = BronzeEncoder.layer


async def bronze_sink(settings: Settings, dataset: str, group: str, stop: asyncio.Event) -> None:
    """The service's own landing loop; files roll after 1 s so the backlog's tail is not a 5 s wait."""
    quick = settings.model_copy(update={"flush_interval_s": 1.0})
    await land(quick, BronzeEncoder(), [names.raw_topic(dataset)], group, stop)


def commit_histogram(layer: str) -> tuple[list[tuple[float, float]], float]:
    """This process's ``lab_lake_commit_seconds`` of ``layer``: (upper bound, cumulative count) per bucket, and the sum."""
    samples = [s for metric in COMMIT_SECONDS.collect() for s in metric.samples if s.labels.get("layer") == layer]
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    return buckets, sum(s.value for s in samples if s.name.endswith("_sum"))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of a cumulative histogram, interpolated within its bucket as Prometheus's
    ``histogram_quantile`` does (so only as fine as the buckets)."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below) if count > below else lower
        lower, below = upper, count
    return lower


async def commits_and_files(settings: Settings, dataset: str) -> dict[str, object]:
    """Commit latency of the run, and the bronze table's files as landed and after one maintenance pass
    with the services' default policy (the current day's partition is open: compacted from 32 files)."""
    buckets, total_s = commit_histogram(LAYER)
    commits = int(buckets[-1][1]) if buckets else 0
    tables = Tables.from_settings(settings)
    path = names.table_path(LAYER, dataset)
    landed = tables.stats(path)
    maintained = await asyncio.to_thread(maintain, tables, path, MaintenancePolicy.from_settings(settings))
    return {
        "delta_commits": commits,
        "commit_p50_s": round(quantile(0.5, buckets), 3) if commits else None,
        "commit_p99_s": round(quantile(0.99, buckets), 3) if commits else None,
        "commit_mean_s": round(total_s / commits, 3) if commits else None,
        "table_version": landed.version if landed else None,
        "table_files_landed": landed.files if landed else None,
        "table_files_after_maintenance": maintained.files_after if maintained else None,
        "table_mib": round(landed.bytes / 2**20, 1) if landed else None,
    }


def main(events: int = 1_000_000) -> None:
    result = asyncio.run(against_consume_only(events, LAYER, 0.7, bronze_sink, commits_and_files))
    report("bronze", "bronze_sink benchmark", result)
