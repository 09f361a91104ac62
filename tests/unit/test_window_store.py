"""The RocksDB checkpoint of gold windows: what was saved comes back, the changelog tail applied on
top of an older checkpoint gives the same windows as the whole changelog, and a checkpoint costs what
its batch changed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import duckdb
import orjson
import pyarrow as pa
import pytest

from archlab.contract import load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.pipeline.gold.window_store import (
    HIGHEST,
    CheckpointRows,
    TailReplay,
    WindowStore,
    apply_delta,
    checkpoint_rows,
    delta_state,
    window_key_bytes,
)
from archlab.pipeline.gold.windows import PartitionWindows, Window, WindowKey
from archlab.pipeline.rocks import MEMTABLE_BYTES
from tests.unit.test_windows import silver_rows

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")


class ChangelogEntry(NamedTuple):
    offset: int
    key: bytes
    value: bytes | None


def snapshot(windows: PartitionWindows) -> dict:
    return {key: windows.gold_value(key, window) | {"sets": window.sets}
            for key, window in windows.windows.items()}


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def aggregate(windows: PartitionWindows, con: duckdb.DuckDBPyConnection, batch: pa.Table, revision: int,
              changelog: list[tuple[bytes, bytes | None]], watermark: int | None = None) -> CheckpointRows:
    """One batch as the aggregator takes it: its deltas appended to ``changelog`` (tombstones for the windows
    it forgets), and the checkpoint rows it would write once the batch committed. ``watermark``: the one
    silver partition's highest event time, reported before the batch."""
    if watermark is not None:
        windows.report(0, watermark)
    batch = batch.append_column("_watermark", pa.array([watermark] * batch.num_rows, pa.int64()))
    outcome = windows.apply(con, batch, revision)
    deltas: dict[bytes, bytes] = {}
    for key, (window, change) in outcome.touched.items():
        if key in outcome.dropped:
            continue
        delta_key = window_key_bytes(key) + b"@%d" % revision
        deltas[delta_key] = delta_state(window, windows.plans[key[0]], change.new_members, key)
        window.deltas.append(delta_key)
    changelog.extend(deltas.items())
    for window in outcome.dropped.values():
        changelog.extend((delta, None) for delta in window.deltas)
    changelog.append((HIGHEST, orjson.dumps({str(p): ms for p, ms in windows.highest.items()})))
    changed: dict[WindowKey, Window] = {key: window for key, (window, _) in outcome.touched.items()}
    return checkpoint_rows(windows, changed, deltas, {key: w.deltas for key, w in outcome.dropped.items()})


def test_checkpoint_plus_changelog_tail_equals_the_whole_changelog(tmp_path: Path) -> None:
    silver = silver_rows("orders", 3_000, seed=12)
    con = connect()
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    store = WindowStore(tmp_path)
    for revision, start in enumerate(range(0, silver.num_rows, 500)):
        rows = aggregate(live, con, silver.slice(start, 500), revision, changelog)
        if revision <= 2:  # checkpoints of the first three batches only: the rest is the tail
            store.write("orders", 0, rows, checkpoint=len(changelog) - 1)
    store.close("orders", 0)

    from_store = PartitionWindows(CONTRACT, silver_partitions=1)
    checkpoint = WindowStore(tmp_path).load("orders", 0, from_store)
    assert checkpoint is not None and 0 < checkpoint < len(changelog) - 1
    for delta_key, value in changelog[checkpoint - 3:]:  # a few already in the checkpoint: applied twice
        apply_delta(from_store, delta_key, value)

    from_changelog = PartitionWindows(CONTRACT, silver_partitions=1)
    for delta_key, value in changelog:
        apply_delta(from_changelog, delta_key, value)

    assert snapshot(from_store) == snapshot(from_changelog) == snapshot(live)


def test_closed_windows_keep_only_the_size_of_their_sets_and_are_restored_so(tmp_path: Path) -> None:
    """A final window can gain no on-time event, so it keeps its distinct counts and drops the members
    (a window is kept an hour after it closes, to count late events). Restored from a checkpoint and
    its tail, from a checkpoint alone, or from the whole changelog, it has the same counts and no members."""
    silver = silver_rows("orders", 2_000, seed=31)
    last_event = max(int(t.timestamp() * 1000) for t in silver["event_time"].to_pylist())
    con = connect()
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    early, late = WindowStore(tmp_path / "early"), WindowStore(tmp_path / "late")
    batches = [(silver.slice(0, 500), None), (silver.slice(500, 500), None), (silver.slice(1_000, 500), None),
               (silver.slice(0, 0), last_event + 15 * 60_000),  # past every minute window's end and grace
               (silver.slice(1_500, 500), last_event + 15 * 60_000)]  # late for the closed windows
    for revision, (batch, watermark) in enumerate(batches):
        rows = aggregate(live, con, batch, revision, changelog, watermark)
        for store in (early, late) if revision <= 1 else (late,):
            store.write("orders", 0, rows, checkpoint=len(changelog) - 1)
    for store in (early, late):
        store.close("orders", 0)
    closed = {key: w for key, w in live.windows.items() if w.final}
    assert closed and all(not w.sets and w.closed_counts["orders"] > 0 for w in closed.values())
    assert sum(w.late_events for w in closed.values()) > 0

    from_tail = PartitionWindows(CONTRACT, silver_partitions=1)
    checkpoint = WindowStore(tmp_path / "early").load("orders", 0, from_tail)
    assert checkpoint is not None
    for delta_key, value in changelog[checkpoint + 1:]:
        apply_delta(from_tail, delta_key, value)
    from_checkpoint = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path / "late").load("orders", 0, from_checkpoint) == len(changelog) - 1
    for delta_key, value in changelog[:checkpoint + 1]:  # deltas from before the windows closed, applied again
        apply_delta(from_checkpoint, delta_key, value)
    for delta_key, value in changelog[checkpoint + 1:]:
        apply_delta(from_checkpoint, delta_key, value)
    from_changelog = PartitionWindows(CONTRACT, silver_partitions=1)
    for delta_key, value in changelog:
        apply_delta(from_changelog, delta_key, value)
    for restored in (from_tail, from_checkpoint, from_changelog):
        assert snapshot(restored) == snapshot(live)
        assert all(not restored.windows[key].sets for key in closed)


def test_a_checkpoint_costs_what_its_batch_changed_not_what_the_windows_hold(tmp_path: Path) -> None:
    """Batches of one busy hour: every one touches the hour's window, whose distinct-id sets keep growing.
    The last batch's checkpoint must be no larger than the first's (rewriting whole sets made it grow
    with the hour), and what the checkpoints add up to must restore the same windows."""
    silver = silver_rows("orders", 6_000, seed=21)
    con = connect()
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    store = WindowStore(tmp_path)
    sizes = []
    for revision, start in enumerate(range(0, silver.num_rows, 500)):
        rows = aggregate(live, con, silver.slice(start, 500), revision, changelog)
        sizes.append(sum(len(key) + len(value or b"") for key, value in rows))
        store.write("orders", 0, rows, checkpoint=len(changelog) - 1)
    store.close("orders", 0)
    hourly = [w for key, w in live.windows.items() if key[0] == "totals_1h"]
    assert max(len(w.sets["orders"]) for w in hourly) > 5_000 / 2  # the hour's set did grow, batch after batch
    assert sizes[-1] < 1.5 * sizes[0], sizes

    restored = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path).load("orders", 0, restored) == len(changelog) - 1
    assert snapshot(restored) == snapshot(live)
    assert {key: sorted(w.deltas) for key, w in restored.windows.items()} == {
        key: sorted(w.deltas) for key, w in live.windows.items()}


def test_after_a_failed_write_nothing_more_is_written_until_the_next_restore(tmp_path: Path) -> None:
    """Each checkpoint adds to the ones before it, so one that failed must not be followed by later ones
    (their offset would claim the lost batch's set members): the store keeps the last checkpoint that
    landed, and the restore's tail brings back the rest."""
    silver = silver_rows("orders", 1_500, seed=22)
    con = connect()
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    store = WindowStore(tmp_path)
    store.write("orders", 0, aggregate(live, con, silver.slice(0, 500), 0, changelog), checkpoint=len(changelog) - 1)
    landed = len(changelog) - 1
    store._db("orders", 0).close()  # the next write fails (as on a full disk)
    with pytest.raises(Exception):
        store.write("orders", 0, aggregate(live, con, silver.slice(500, 500), 1, changelog), checkpoint=len(changelog) - 1)
    del store._open[("orders", 0)]  # the disk is back: a write would succeed now
    store.write("orders", 0, aggregate(live, con, silver.slice(1_000, 500), 2, changelog), checkpoint=len(changelog) - 1)
    store.close("orders", 0)

    restored = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path).load("orders", 0, restored) == landed
    tail = TailReplay(restored, WindowStore(tmp_path / "other"), "orders", 0)
    tail.apply(ChangelogEntry(offset, key, value) for offset, (key, value) in enumerate(changelog) if offset > landed)
    assert snapshot(restored) == snapshot(live)


def test_a_checkpoint_of_another_format_is_cleared_and_the_changelog_replayed(tmp_path: Path) -> None:
    store = WindowStore(tmp_path)
    store._db("orders", 0)[b'["totals_1h",0]'] = b'{"events":1,"sets":{"orders":["O-1"]}}'  # no format key
    store._db("orders", 0)[b"~checkpoint"] = b"41"
    windows = PartitionWindows(CONTRACT, silver_partitions=1)
    assert store.load("orders", 0, windows) is None
    assert windows.windows == {}
    assert list(store._db("orders", 0).keys()) == []


def test_windows_restored_from_the_tail_survive_the_next_checkpoint(tmp_path: Path) -> None:
    """A restart applies the changelog tail; its next checkpoint must not skip the windows that only
    the tail held (a late event's window, touched once): restore saves what the tail changed."""
    silver = silver_rows("orders", 1_000, seed=4)
    con = connect()
    writer = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    for revision, start in enumerate(range(0, 1_000, 250)):
        aggregate(writer, con, silver.slice(start, 250), revision, changelog)
    store = WindowStore(tmp_path)
    restarted = PartitionWindows(CONTRACT, silver_partitions=1)
    assert store.load("orders", 0, restarted) is None  # no checkpoint: the whole changelog is the tail
    tail = TailReplay(restarted, store, "orders", 0)  # as the aggregator's restore uses it
    tail.apply(ChangelogEntry(offset, key, value) for offset, (key, value) in enumerate(changelog))
    tail.finish()
    assert tail.applied == len(changelog)
    # the next batch touches one window only, and moves the checkpoint past the tail
    key, window = next(iter(restarted.windows.items()))
    store.write("orders", 0, checkpoint_rows(restarted, {key: window}, {}, {}), checkpoint=len(changelog) + 5)
    store.close("orders", 0)

    again = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path).load("orders", 0, again) == len(changelog) + 5
    assert snapshot(again) == snapshot(writer)


def test_rows_encoded_before_the_next_batch_checkpoint_the_state_they_were_encoded_from(tmp_path: Path) -> None:
    """The aggregator encodes a batch's checkpoint rows when it prepares the batch and writes them after
    the commit, possibly once the next batch has changed the windows: the checkpoint must hold the
    state of the committed batch, not the later one."""
    silver = silver_rows("orders", 1_000, seed=13)
    con = connect()
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes | None]] = []
    rows = aggregate(live, con, silver.slice(0, 500), 1, changelog)
    committed = copy.deepcopy(snapshot(live))  # the sets would change with the windows
    aggregate(live, con, silver.slice(500, 500), 2, changelog)  # the next batch, prepared before the first one's checkpoint is written
    assert snapshot(live) != committed
    store = WindowStore(tmp_path)
    store.write("orders", 0, rows, checkpoint=7)
    store.close("orders", 0)
    restored = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path).load("orders", 0, restored) == 7
    assert snapshot(restored) == committed


def test_a_store_keeps_a_few_mib_in_memory_whatever_it_wrote(tmp_path: Path) -> None:
    """A store holds at most two memtables of MEMTABLE_BYTES (one filling, one being written to a file)
    however much it was given: three memtables' worth of checkpoints here, windows rewritten over and over
    as a quiet stream does. With RocksDB's default (64 MiB) all of it would still be in memory."""
    store = WindowStore(tmp_path)
    value = b"x" * 1000
    for checkpoint in range(3 * MEMTABLE_BYTES // (100 * len(value))):
        store.write("orders", 0, [(f"window-{i}".encode(), value) for i in range(100)], checkpoint)
    in_memory = store._db("orders", 0).property_int_value("rocksdb.cur-size-all-mem-tables")
    store.close("orders", 0)
    assert in_memory <= 2.5 * MEMTABLE_BYTES, f"{in_memory / 2**20:.1f} MiB in memtables"
