"""Committed gold windows on local disk (RocksDB through rocksdict), so a restart reads only the
tail of the state changelog instead of all of it.

The changelog (``<dataset>.gold-state``, written inside each batch's transaction) stays the
truth; this store is a checkpoint of it. It is written only after a transaction has committed,
together with the changelog offset it reflects, in one RocksDB write batch: it is never ahead of
Kafka, and when it is behind (a crash between the commit and the write, or another instance
owned the partition meanwhile) the deltas after its offset are applied on top. Applying a delta
twice changes nothing (counters are replaced, sets are unions), so a checkpoint a little old is
only slower, never wrong.

A checkpoint costs what a batch changed, never what a window holds: a window's row has its counters,
and the members its ``count_distinct`` sets gained are in the batch's changelog deltas, kept as rows of
their own (``+<delta key>``) until the window is forgotten. (Rewriting whole sets made every batch of a
busy hour re-encode and re-write the hour's million distinct ids.) Because each checkpoint adds to the
ones before it, none may be skipped: after a failed write the store writes nothing more for that
partition until its next restore, which starts from the last checkpoint that landed.
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
FORMAT = b"~format"
FORMAT_VERSION = b"2"  # 2: set members in delta rows; a store of another format is cleared and rebuilt
DELTA_ROW = b"+"  # prefix of the rows holding a window's changelog deltas (its set members)


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
    closed = window.final  # final for good, its sets only sizes now: a delta applied again adds no member
    window.events, window.late_events = state["events"], state["late_events"]
    window.final, window.revision = state["final"] or closed, state["revision"]
    window.values = windows.plans[key[0]].load_values(state["values"])
    if not closed:
        window.add_members(state["new"])
        if window.final:
            window.close()
    if delta_key not in window.deltas:
        window.deltas.append(delta_key)
    return key


class ChangelogRecord(Protocol):
    offset: int
    key: bytes
    value: bytes | None


class TailReplay:
    """The changelog after a checkpoint, applied to a partition's windows on restore and written to the
    store as it is read (its deltas as delta rows, its tombstones as deletions).

    ``finish`` checkpoints every window the tail changed before anything else can move the
    checkpoint past the tail: later checkpoints save only the windows a batch touched, so a window
    that only the tail held would otherwise be lost at the restart after next. Run it, and ``apply``,
    in the store's thread.
    """

    def __init__(self, windows: PartitionWindows, store: WindowStore, dataset: str, partition: int) -> None:
        self.windows = windows
        self.store, self.dataset, self.partition = store, dataset, partition
        self.applied = 0
        self.last_offset: int | None = None
        self._changed: set[WindowKey] = set()

    def apply(self, records: Iterable[ChangelogRecord]) -> None:
        deltas: dict[bytes, bytes] = {}
        forgotten: dict[WindowKey, list[bytes]] = {}
        for record in records:
            key = apply_delta(self.windows, record.key, record.value)
            if key is not None:
                self._changed.add(key)
                if record.value is None:
                    forgotten.setdefault(key, []).append(record.key)
                else:
                    deltas[record.key] = record.value
            self.applied += 1
            self.last_offset = record.offset
        self.store.write_rows(self.dataset, self.partition, delta_rows(deltas, forgotten))

    def finish(self) -> None:
        if self.last_offset is None:
            return
        windows = self.windows.windows
        changed = {key: windows[key] for key in self._changed if key in windows}
        self.store.write(self.dataset, self.partition, checkpoint_rows(self.windows, changed, {}, {}),
                         self.last_offset)


CheckpointRows = list[tuple[bytes, bytes | None]]
"""RocksDB rows of a checkpoint, in order: a window's counters or a delta, or None to delete the row."""


def delta_rows(deltas: dict[bytes, bytes], forgotten: dict[WindowKey, list[bytes]]) -> CheckpointRows:
    """Rows of changelog deltas (key -> the value the changelog holds), and the deletion of forgotten
    windows (window key -> its delta keys) with their deltas."""
    rows: CheckpointRows = [(DELTA_ROW + key, value) for key, value in deltas.items()]
    for key, window_deltas in forgotten.items():
        rows.append((window_key_bytes(key), None))
        rows.extend((DELTA_ROW + delta, None) for delta in window_deltas)
    return rows


def checkpoint_rows(windows: PartitionWindows, changed: dict[WindowKey, Window], deltas: dict[bytes, bytes],
                    forgotten: dict[WindowKey, list[bytes]]) -> CheckpointRows:
    """The rows that bring a checkpoint to ``windows`` as they are now: the counters of ``changed``
    windows, the batch's ``deltas`` (which hold the set members it added), the deletion of ``forgotten``
    windows, and the silver partitions' highest event times."""
    rows: CheckpointRows = [(window_key_bytes(key), orjson.dumps({
        "events": window.events, "late_events": window.late_events, "final": window.final,
        "revision": window.revision, "values": window.values,  # decimals as strings, as in deltas
    }, default=str)) for key, window in changed.items() if key not in forgotten]
    rows.extend(delta_rows(deltas, forgotten))
    rows.append((HIGHEST, orjson.dumps({str(p): ms for p, ms in windows.highest.items()})))
    return rows


class WindowStore:
    """One RocksDB per (dataset, shuffle partition) under ``folder``; used from one thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[tuple[str, int], Rdict] = {}
        self._failed: set[tuple[str, int]] = set()  # a write failed: nothing more is written until a load

    def _db(self, dataset: str, partition: int) -> Rdict:
        db = self._open.get((dataset, partition))
        if db is None:
            path = self.folder / dataset / f"{partition:03d}"
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._open[(dataset, partition)] = open_store(path)
        return db

    def load(self, dataset: str, partition: int, windows: PartitionWindows) -> int | None:
        """Fill ``windows`` from the checkpoint; returns the changelog offset it reflects (None: empty)."""
        self._failed.discard((dataset, partition))
        db = self._db(dataset, partition)
        if db.get(FORMAT) != FORMAT_VERSION:  # new, or written by an older version: rebuilt from the changelog
            self.clear(dataset, partition)
            return None
        checkpoint = db.get(CHECKPOINT)
        deltas: list[tuple[bytes, bytes]] = []
        for key, value in db.items():
            if key in (CHECKPOINT, FORMAT):
                continue
            if key == HIGHEST:
                apply_delta(windows, HIGHEST, value)
            elif key.startswith(DELTA_ROW):
                deltas.append((key.removeprefix(DELTA_ROW), value))
            else:
                state = orjson.loads(value)
                window_key = parse_window_key(key)
                windows.windows[window_key] = Window(
                    events=state["events"], late_events=state["late_events"], final=state["final"],
                    revision=state["revision"], values=windows.plans[window_key[0]].load_values(state["values"]),
                )
        for delta_key, value in deltas:
            window = windows.windows.get(parse_window_key(delta_key.rsplit(b"@", 1)[0]))
            if window is None:  # written by a restore cut short, before its window's row: the tail has it
                continue
            window.add_members(orjson.loads(value)["new"])
            window.deltas.append(delta_key)
        for window in windows.windows.values():
            if window.final:
                window.close()  # its members were needed only to count them
        return None if checkpoint is None else int(checkpoint)

    def write(self, dataset: str, partition: int, rows: CheckpointRows, checkpoint: int) -> None:
        """Write rows encoded earlier by :func:`checkpoint_rows` and the changelog offset they reflect,
        in one RocksDB write batch. The aggregator encodes them while it holds the batch's state (before
        the next batch changes it) and writes them once the transaction committed, off its event loop."""
        self.write_rows(dataset, partition, [*rows, (CHECKPOINT, str(checkpoint).encode())])

    def write_rows(self, dataset: str, partition: int, rows: CheckpointRows) -> None:
        """Rows without moving the checkpoint's offset, atomically; none after a write that failed."""
        if (dataset, partition) in self._failed:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in rows:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(FORMAT, FORMAT_VERSION)
        try:
            self._db(dataset, partition).write(batch)
        except Exception:
            self._failed.add((dataset, partition))
            raise

    def clear(self, dataset: str, partition: int) -> None:
        """Forget a checkpoint that belongs to another life of the topics, or to another format."""
        db = self._db(dataset, partition)
        batch = WriteBatch(raw_mode=True)
        for key in list(db.keys()):
            batch.delete(key)
        db.write(batch)

    def close(self, dataset: str, partition: int) -> None:
        db = self._open.pop((dataset, partition), None)
        if db is not None:
            db.close()
