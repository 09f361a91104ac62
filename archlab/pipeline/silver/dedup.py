"""De-duplication state, kept per source partition and bounded by the contract's horizon.

The state is a compacted changelog topic, ``<dataset>.silver-dedup``, with one partition per raw
partition. Its records are written in the same Kafka transaction as the refined output and the
consumer offsets, so after a crash the state holds exactly the keys whose output committed:
a faust table's changelog, written by faust's own producer outside our transaction, could not
promise that (see faust-streaming issues #177, #517, #323 on its exactly-once mode).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import psutil
from aiokafka import TopicPartition
from rocksdict import Rdict, WriteBatch

from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import read_to_end
from archlab.pipeline.rocks import open_store

_EVENT_MS = struct.Struct(">q")


EVICT_EVERY = 50_000  # new keys between two sweeps of expired ones
_SEEN, _BY_TIME = b"k", b"t"  # key prefixes: dedup key -> event time, and (event time, dedup key) -> nothing
_SORTABLE_MS = struct.Struct(">Q")  # event time + 2**63: byte order is time order, negative times included
_SCRATCH_PREFIX = "archlab-silver-keys-"
RESTORE_CHUNK = 100_000  # keys per write while a store is filled from the changelog


def _remove_stores_of_dead_processes() -> None:
    """A process killed (-9) leaves its temporary stores behind: whoever starts next removes them."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = folder.name.removeprefix(_SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _time_prefix(ms: int) -> bytes:
    return _BY_TIME + _SORTABLE_MS.pack(ms + 2**63)


class _PartitionKeys:
    """One raw partition's keys, off the Python heap in a RocksDB of its own (170 MB per million keys as a
    dict: a day of a 200 events/s stream is 17 million), with an index by event time so that forgetting the
    expired ones reads only them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_store(path, bloom_filter=True)  # most keys looked up are new
        self.watermark_ms = 0  # highest event time seen in the partition
        self.added = 0  # keys added since the last sweep
        self.size = 0

    def add(self, entries: Iterable[tuple[bytes, int]]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, ms in entries:
            batch.put(_SEEN + key, _EVENT_MS.pack(ms))
            batch.put(_time_prefix(ms) + key, b"")
            self.added += 1
            self.size += 1
            self.watermark_ms = max(self.watermark_ms, ms)
        self.db.write(batch)

    def sweep(self, horizon_ms: int) -> None:
        """Forget keys older than the horizon behind the partition's highest event time."""
        end = _time_prefix(self.watermark_ms - horizon_ms)
        batch = WriteBatch(raw_mode=True)
        for index_key in self.db.keys(from_key=_BY_TIME):
            if index_key >= end:
                break
            batch.delete(_SEEN + index_key[len(end):])
            self.size -= 1
        batch.delete_range(_BY_TIME, end)
        self.db.write(batch)
        self.added = 0

    def destroy(self) -> None:
        self.db.close()
        Rdict.destroy(str(self.path))


class DedupState:
    """Which de-duplication keys each assigned raw partition has already let through, in a RocksDB per
    partition under ``folder`` (default: a temporary folder of this process). The changelog topic stays the
    truth: a partition's store is filled from it on each assignment and dropped with the partition."""

    def __init__(self, horizon_ms: int, folder: Path | None = None) -> None:
        self.horizon_ms = horizon_ms
        if folder is None:
            _remove_stores_of_dead_processes()
        self._scratch = None if folder else tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
        self._folder = folder or Path(self._scratch.name)  # type: ignore[union-attr]
        self._partitions: dict[TopicPartition, _PartitionKeys] = {}

    def _keys(self, tp: TopicPartition) -> _PartitionKeys:
        keys = self._partitions.get(tp)
        if keys is None:
            path = self._folder / f"{tp.topic}-{tp.partition}"
            if path.exists():
                Rdict.destroy(str(path))  # of an earlier assignment in a life that ended without a drop
            keys = self._partitions[tp] = _PartitionKeys(path)
        return keys

    def first_seen(
        self, topic: str, partitions: Sequence[int], keys: Sequence[bytes], event_ms: Sequence[int]
    ) -> list[bool]:
        """For each row (of any partition of ``topic``), True when its key is new in its partition.

        New keys are recorded; a key repeated inside the same batch is a duplicate too. A key older
        than the horizon behind the partition's newest event has been forgotten and passes as new.
        """
        rows: dict[int, list[int]] = {}
        for row, partition in enumerate(partitions):
            rows.setdefault(partition, []).append(row)
        result = [False] * len(keys)
        for partition, indices in rows.items():
            state = self._keys(TopicPartition(topic, partition))
            known = state.db.get([_SEEN + keys[i] for i in indices])
            new: dict[bytes, int] = {}
            for i, before in zip(indices, known, strict=True):
                if before is None and keys[i] not in new:
                    new[keys[i]] = event_ms[i]
                    result[i] = True
            state.add(new.items())
            if state.added >= EVICT_EVERY:
                state.sweep(self.horizon_ms)
        return result

    def restore(self, tp: TopicPartition, entries: dict[bytes, int]) -> None:
        self.drop(tp)
        state = self._keys(tp)
        items = iter(entries.items())
        while chunk := list(islice(items, RESTORE_CHUNK)):
            state.add(chunk)
        state.sweep(self.horizon_ms)

    def drop(self, tp: TopicPartition) -> None:
        state = self._partitions.pop(tp, None)
        if state is not None:
            state.destroy()

    def size(self) -> int:
        return sum(p.size for p in self._partitions.values())


def encode_event_ms(values: Sequence[int]) -> list[bytes]:
    """Changelog values: each event time as 8 big-endian bytes (one pass through numpy)."""
    packed = np.asarray(values, dtype=">i8").tobytes()
    return [packed[i : i + 8] for i in range(0, len(packed), 8)]


async def read_changelog(settings: Settings, dataset: str, partition: int) -> dict[bytes, int]:
    """The committed de-duplication entries of one partition (read_committed, from the start)."""
    entries: dict[bytes, int] = {}
    async for records in read_to_end(settings, [TopicPartition(names.dedup_topic(dataset), partition)], 50_000):
        for record in records:
            if record.value is None:
                entries.pop(record.key, None)
            else:
                entries[record.key] = _EVENT_MS.unpack(record.value)[0]
    return entries
