"""Committed gold windows on local disk (RocksDB through rocksdict), so a restart reads only the
tail of the state changelog instead of all of it.

The changelog (``<dataset>.gold-state``, written inside each batch's transaction) stays the
truth; this store is a checkpoint of it. It is written only after a transaction has committed,
together with the changelog offset it reflects, in one RocksDB write batch: it is never ahead of
Kafka, and when it is behind (a crash between the commit and the write, or another instance
owned the partition meanwhile) the deltas after its offset are applied on top. Applying a delta
twice changes nothing (counters are replaced, sets are unions), so a checkpoint a little old is
only slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson
from rocksdict import Rdict, WriteBatch

from archlab.pipeline.gold.windows import AggregatePlan, PartitionWindows, Window, WindowKey
from archlab.pipeline.rocks import open_store

CHECKPOINT = b"~checkpoint"
HIGHEST = b"~highest"


def window_key_bytes(key: WindowKey) -> bytes:
    return orjson.dumps([key[0], key[1], *key[2]])


def parse_window_key(data: bytes) -> WindowKey:
    parts = orjson.loads(data)
    return parts[0], parts[1], tuple(parts[2:])


def delta_state(window: Window, plan: AggregatePlan, new_members: dict[str, list[Any]], key: WindowKey) -> bytes:
    """A changelog delta: the window's counters, and the set members this batch added."""
    return orjson.dumps({  # decimals as strings (default=str): load_values reads them back
        "key": [key[0], key[1], *key[2]], "events": window.events, "late_events": window.late_events,
        "final": window.final, "revision": window.revision, "values": window.values, "new": new_members,
    }, default=str)


def apply_delta(windows: PartitionWindows, delta_key: bytes, value: bytes | None) -> WindowKey | None:
    """Apply one changelog record to a partition's windows (a tombstone forgets its window);
    returns the window it changed (None for the watermark record)."""
    if delta_key == HIGHEST:
        if value is not None:
            windows.highest = {int(p): ms for p, ms in orjson.loads(value).items()}
        return None
    key = parse_window_key(delta_key.rsplit(b"@", 1)[0])
    if value is None:
        windows.windows.pop(key, None)
        return key
    state = orjson.loads(value)
    window = windows.windows.setdefault(key, Window())
    window.events, window.late_events = state["events"], state["late_events"]
    window.final, window.revision = state["final"], state["revision"]
    window.values = windows.plans[key[0]].load_values(state["values"])
    for measure, members in state["new"].items():
        window.sets.setdefault(measure, set()).update(members)
    if delta_key not in window.deltas:
        window.deltas.append(delta_key)
    return key


class ChangelogRecord(Protocol):
    offset: int
    key: bytes
    value: bytes | None


class TailReplay:
    """The changelog after a checkpoint, applied to a partition's windows on restore.

    ``finish`` checkpoints every window the tail changed before anything else can move the
    checkpoint past the tail: later checkpoints save only the windows a batch touched, so a window
    that only the tail held would otherwise be lost at the restart after next.
    """

    def __init__(self, windows: PartitionWindows) -> None:
        self.windows = windows
        self.applied = 0
        self.last_offset: int | None = None
        self._changed: set[WindowKey] = set()

    def apply(self, records: Iterable[ChangelogRecord]) -> None:
        for record in records:
            key = apply_delta(self.windows, record.key, record.value)
            if key is not None:
                self._changed.add(key)
            self.applied += 1
            self.last_offset = record.offset

    def finish(self, store: WindowStore, dataset: str, partition: int) -> None:
        if self.last_offset is None:
            return
        windows = self.windows.windows
        store.save(dataset, partition, self.windows,
                   {key: windows[key] for key in self._changed if key in windows},
                   [key for key in self._changed if key not in windows], self.last_offset)


CheckpointRows = list[tuple[bytes, bytes | None]]
"""RocksDB rows of a checkpoint, in order: a window's encoded state, or None to delete the window."""


def checkpoint_rows(windows: PartitionWindows, changed: dict[WindowKey, Window],
                    forgotten: Iterable[WindowKey]) -> CheckpointRows:
    """The rows that bring a checkpoint to ``windows`` as they are now: ``changed`` windows (unless
    forgotten), deletions of ``forgotten`` ones, and the silver partitions' highest event times."""
    forgotten = set(forgotten)
    rows: CheckpointRows = []
    for key, window in changed.items():
        if key in forgotten:
            continue
        rows.append((window_key_bytes(key), orjson.dumps({
            "events": window.events, "late_events": window.late_events, "final": window.final,
            "revision": window.revision, "values": window.values,  # decimals as strings, as in deltas
            "sets": {m: list(members) for m, members in window.sets.items()},
            "deltas": [d.decode() for d in window.deltas],
        }, default=str)))
    rows.extend((window_key_bytes(key), None) for key in forgotten)
    rows.append((HIGHEST, orjson.dumps({str(p): ms for p, ms in windows.highest.items()})))
    return rows


class WindowStore:
    """One RocksDB per (dataset, shuffle partition) under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[tuple[str, int], Rdict] = {}

    def _db(self, dataset: str, partition: int) -> Rdict:
        db = self._open.get((dataset, partition))
        if db is None:
            path = self.folder / dataset / f"{partition:03d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._open[(dataset, partition)] = open_store(path)
        return db

    def load(self, dataset: str, partition: int, windows: PartitionWindows) -> int | None:
        """Fill ``windows`` from the checkpoint; returns the changelog offset it reflects (None: empty)."""
        db = self._db(dataset, partition)
        checkpoint = db.get(CHECKPOINT)
        for key, value in db.items():
            if key == CHECKPOINT:
                continue
            if key == HIGHEST:
                apply_delta(windows, HIGHEST, value)
                continue
            state = orjson.loads(value)
            window_key = parse_window_key(key)
            windows.windows[window_key] = Window(
                events=state["events"], late_events=state["late_events"], final=state["final"],
                revision=state["revision"], values=windows.plans[window_key[0]].load_values(state["values"]),
                sets={m: set(members) for m, members in state["sets"].items()},
                deltas=[d.encode() for d in state["deltas"]],
            )
        return None if checkpoint is None else int(checkpoint)

    def save(
        self, dataset: str, partition: int, windows: PartitionWindows, changed: dict[WindowKey, Window],
        forgotten: list[WindowKey], checkpoint: int,
    ) -> None:
        """Record committed windows and the changelog offset they reflect, atomically."""
        self.write(dataset, partition, checkpoint_rows(windows, changed, forgotten), checkpoint)

    def write(self, dataset: str, partition: int, rows: CheckpointRows, checkpoint: int) -> None:
        """Write rows encoded earlier by :func:`checkpoint_rows` and the changelog offset they reflect,
        in one RocksDB write batch. The aggregator encodes them while it holds the batch's state (before
        the next batch changes it) and writes them once the transaction committed, off its event loop."""
        batch = WriteBatch(raw_mode=True)
        for key, value in rows:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT, str(checkpoint).encode())
        self._db(dataset, partition).write(batch)

    def clear(self, dataset: str, partition: int) -> None:
        """Forget a checkpoint that belongs to another life of the topics."""
        db = self._db(dataset, partition)
        batch = WriteBatch(raw_mode=True)
        for key in list(db.keys()):
            batch.delete(key)
        db.write(batch)

    def close(self, dataset: str, partition: int) -> None:
        db = self._open.pop((dataset, partition), None)
        if db is not None:
            db.close()
