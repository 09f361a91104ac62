"""Table maintenance: few files per partition, a short log to replay, and old files deleted only
when no reader can still need them.

Each writing service maintains the tables it writes (:func:`maintain_forever` next to its sinks),
one pass per table every ``LAB_MAINTENANCE_INTERVAL_S``:

1. **Retention properties** — the table's ``delta.logRetentionDuration`` (history kept, so time
   travel reaches that far) and ``delta.deletedFileRetentionDuration`` follow the settings.
2. **Compaction** (``optimize.compact``) of *closed* partitions: those no file was added to for
   ``LAB_COMPACT_QUIET_S`` (yesterday's ``dt``, a replayed year once the replay moved on). An open
   partition, or an unpartitioned table, is compacted only once it holds ``LAB_COMPACT_MIN_FILES``
   files, so the data being written now is not rewritten every pass. Compaction commits a new
   version that removes the small files *logically*: a reader on an older snapshot still reads them.
3. **Vacuum** deletes the files removed more than ``LAB_VACUUM_RETENTION_H`` ago. The default, a
   week, is safe because a reader reads the files of the snapshot it opened: it loses one only if it
   holds that snapshot longer than the retention (no query, API snapshot or time travel within the
   kept history does), and a writer commits within seconds of writing its files. Files never
   committed (a writer killed mid-flush) are not collected: non-full vacuum reads the log only.
4. **Checkpoint** after ``LAB_CHECKPOINT_EVERY`` versions (or once vacuum deleted files), so a
   reader opens the table from one Parquet checkpoint instead of replaying many JSON commits, then
   **log cleanup** of commits older than the history retention.

A conflict with a concurrent writer (``CommitFailedError``) retries the pass with backoff; any
other failure is logged and the next pass tries again: maintenance never stops a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from prometheus_client import Counter, Gauge

from archlab.core.retry import backoff
from archlab.core.settings import Settings
from archlab.lake.tables import Tables, table_properties

log = structlog.get_logger(__name__)

MAINTAINED = Counter("lab_table_maintenance_total", "Table maintenance operations run (compact: a compaction "
                     "committed; vacuum, cleanup: a pass; checkpoint: one written; properties: retention and checkpoint "
                     "interval set)",
                     ["table", "operation"])
TABLE_FILES = Gauge("lab_table_files", "Data files in the table's latest version", ["table"])


@dataclass(frozen=True, slots=True)
class MaintenancePolicy:
    """When a partition is compacted, how often a checkpoint is written, how long things are kept."""

    quiet_s: float
    min_files: int
    checkpoint_every: int
    vacuum_retention_h: int
    history_retention_h: int
    target_file_mb: int

    @classmethod
    def from_settings(cls, settings: Settings) -> MaintenancePolicy:
        return cls(quiet_s=settings.compact_quiet_s, min_files=settings.compact_min_files,
                   checkpoint_every=settings.checkpoint_every, vacuum_retention_h=settings.vacuum_retention_h,
                   history_retention_h=settings.history_retention_h, target_file_mb=settings.target_file_mb)

    def table_properties(self) -> dict[str, str]:
        return table_properties(self.checkpoint_every, self.vacuum_retention_h, self.history_retention_h,
                                self.target_file_mb)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one pass did to one table."""

    files_before: int
    files_after: int
    compacted_partitions: int
    vacuumed_files: int
    checkpoint: bool


def due_partitions(actions: pa.Table, partition_columns: Sequence[str], policy: MaintenancePolicy,
                   now_ms: float) -> list[tuple[str | None, ...]]:
    """Partition values (as strings) worth compacting: closed (quiet) with two files or more, or
    open with ``min_files`` or more. ``actions`` are the table's flattened add actions."""
    keys = [f"partition.{column}" for column in partition_columns]
    columns = {key: pc.cast(actions.column(key), pa.string()) for key in keys}
    files = pa.table({**columns, "path": actions.column("path"),
                      "modified": actions.column("modification_time")})
    groups = files.group_by(keys).aggregate([("path", "count"), ("modified", "max")]) if keys else pa.table(
        {"path_count": [files.num_rows], "modified_max": [pc.max(files.column("modified")).as_py()]})
    due = []
    for row in groups.to_pylist():
        count, newest = row["path_count"], row["modified_max"]
        closed = newest is not None and now_ms - newest >= policy.quiet_s * 1000
        if count >= policy.min_files or (count >= 2 and closed):
            due.append(tuple(row[key] for key in keys))
    return due


def _compact(table: DeltaTable, due: list[tuple[str | None, ...]]) -> int:
    """Compact the ``due`` partitions in as few commits as the filter language allows: one ``in``
    filter for a single partition column, one commit per partition for several."""
    columns = table.metadata().partition_columns
    if not columns:
        plans: list[list[tuple[str, str, object]] | None] = [None]
    elif len(columns) == 1:
        plans = [[(columns[0], "in", [values[0] for values in due])]]
    else:
        plans = [[(c, "=", v) for c, v in zip(columns, values, strict=True)] for values in due]
    removed = 0
    for filters in plans:
        removed += table.optimize.compact(partition_filters=filters)["numFilesRemoved"]
    return removed


def _last_checkpoint(tables: Tables, path: str) -> int:
    """The version of the table's latest checkpoint (-1: none), from the log's ``_last_checkpoint`` pointer."""
    pointer = tables.lake.read_json(f"{path}/_delta_log/_last_checkpoint")
    return int(pointer["version"]) if isinstance(pointer, dict) else -1


def maintain(tables: Tables, path: str, policy: MaintenancePolicy, now_ms: float | None = None,
             ) -> MaintenanceReport | None:
    """One maintenance pass over the table at ``path`` (None: it does not exist yet). Blocking."""
    table = tables.open(path)
    if table is None:
        return None
    wanted = policy.table_properties()
    if any(table.metadata().configuration.get(key) != value for key, value in wanted.items()):
        table.alter.set_table_properties(wanted)
        MAINTAINED.labels(path, "properties").inc()
    actions = pa.table(table.get_add_actions(flatten=True))
    files_before = actions.num_rows
    due = due_partitions(actions, table.metadata().partition_columns, policy,
                         time.time() * 1000 if now_ms is None else now_ms) if files_before else []
    if due and _compact(table, due):
        MAINTAINED.labels(path, "compact").inc()
    vacuumed = table.vacuum(retention_hours=policy.vacuum_retention_h, dry_run=False,
                            enforce_retention_duration=False)
    MAINTAINED.labels(path, "vacuum").inc()
    table.update_incremental()
    checkpoint = bool(vacuumed) or table.version() - _last_checkpoint(tables, path) >= policy.checkpoint_every
    if checkpoint:
        table.create_checkpoint()
        MAINTAINED.labels(path, "checkpoint").inc()
    table.cleanup_metadata()
    MAINTAINED.labels(path, "cleanup").inc()
    files_after = len(table.get_add_actions())
    TABLE_FILES.labels(path).set(files_after)
    report = MaintenanceReport(files_before, files_after, len(due), len(vacuumed), checkpoint)
    if due or vacuumed:
        log.info("table maintained", table=path, version=table.version(), **asdict(report))
    return report


async def maintain_forever(tables: Tables, paths: Sequence[str], settings: Settings, stop: asyncio.Event) -> None:
    """Maintain ``paths`` (tables not created yet are skipped) every ``maintenance_interval_s`` until ``stop``."""
    policy = MaintenancePolicy.from_settings(settings)
    interval = settings.maintenance_interval_s
    while not stop.is_set():
        for path in paths:
            if stop.is_set():
                return
            try:
                async for attempt in backoff("table maintenance", stop=stop, retry_on=CommitFailedError,
                                             first_s=0.2, max_s=min(5.0, interval), give_up_after_s=interval,
                                             table=path):
                    with attempt:
                        await asyncio.to_thread(maintain, tables, path, policy)
            except Exception as exc:  # noqa: BLE001 - maintenance must never stop the service; next pass retries
                log.warning("table maintenance failed", table=path, error=repr(exc)[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
