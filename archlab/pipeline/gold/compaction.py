"""Gold compaction: an hour folder whose windows are all closed becomes one file.

Gold lands one row per update, so an hour of minute windows collects many small objects. Once the
latest row of every key in a folder is ``final``, the folder is rewritten as
``compacted.parquet`` holding only those latest rows, and the objects it was made from are
deleted. Each step is safe to repeat: the compacted object has a fixed name (a rerun overwrites
it), only objects that were read are deleted, and an object written meanwhile (say, a window
re-emitted because late data arrived) stays and is folded in by the next pass. Between the
write and the deletes a row can exist twice; readers take the highest ``revision`` per key, so
the latest value is the same either way.
"""

from __future__ import annotations

import asyncio
import posixpath

import pyarrow as pa
import structlog
from prometheus_client import Counter

from archlab.contract import Contract
from archlab.core import names
from archlab.lake.latest import latest_gold
from archlab.lake.store import Lake

log = structlog.get_logger(__name__)

COMPACTED_NAME = "compacted.parquet"
COMPACTED_FOLDERS = Counter("lab_gold_compacted_folders_total", "Gold hour folders rewritten as one file", ["dataset"])
COMPACTED_OBJECTS = Counter("lab_gold_compacted_objects_total", "Gold objects folded into compacted files", ["dataset"])


def compact_folder(lake: Lake, contract: Contract, folder: str, keys: list[str]) -> bool:
    """Compact one folder if every key's latest row is final; True when it was rewritten."""
    tables = [t for t in (lake.read_parquet(key) for key in keys) if t is not None]
    if not tables:
        return False
    latest = latest_gold(pa.concat_tables(tables), contract, sort=True)
    if latest.num_rows == 0 or not all(latest["final"].to_pylist()):
        return False
    lake.write_parquet(f"{folder}/{COMPACTED_NAME}", latest)
    lake.delete([key for key in keys if posixpath.basename(key) != COMPACTED_NAME])
    COMPACTED_FOLDERS.labels(contract.dataset).inc()
    COMPACTED_OBJECTS.labels(contract.dataset).inc(len(keys))
    return True


def compact_dataset(lake: Lake, contract: Contract) -> int:
    """One pass over a dataset's gold folders; returns how many were compacted."""
    folders: dict[str, list[str]] = {}
    for key in lake.list(names.table_path("gold", contract.dataset)):
        if key.endswith(".parquet"):
            folders.setdefault(posixpath.dirname(key), []).append(key)
    compacted = 0
    for folder, keys in sorted(folders.items()):
        if keys == [f"{folder}/{COMPACTED_NAME}"]:
            continue
        compacted += compact_folder(lake, contract, folder, keys)
    return compacted


async def compact_forever(lake: Lake, contracts: dict[str, Contract], interval_s: float, stop: asyncio.Event) -> None:
    """Compact every dataset's gold folders every ``interval_s`` until ``stop``."""
    while not stop.is_set():
        for contract in contracts.values():
            try:
                count = await asyncio.to_thread(compact_dataset, lake, contract)
            except Exception as exc:  # the lake may be down: the next pass tries again
                log.warning("gold compaction failed, retrying later", dataset=contract.dataset, error=repr(exc))
                continue
            if count:
                log.info("gold folders compacted", dataset=contract.dataset, folders=count)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
