"""The RocksDB checkpoint of gold windows: what was saved comes back, and the changelog tail
applied on top of an older checkpoint gives the same windows as the whole changelog."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa

from archlab.contract import load_contract
from archlab.core.settings import PROJECT_ROOT
from archlab.pipeline.gold.window_store import (
    TailReplay,
    WindowStore,
    apply_delta,
    checkpoint_rows,
    delta_state,
    window_key_bytes,
)
from archlab.pipeline.gold.windows import PartitionWindows
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


def test_checkpoint_plus_changelog_tail_equals_the_whole_changelog(tmp_path: Path) -> None:
    silver = silver_rows("orders", 3_000, seed=12)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    live = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes]] = []
    store = WindowStore(tmp_path)
    for revision, start in enumerate(range(0, silver.num_rows, 500)):
        batch = silver.slice(start, 500).append_column("_watermark", pa.nulls(min(500, silver.num_rows - start), pa.int64()))
        outcome = live.apply(con, batch, revision)
        for key, (window, change) in outcome.touched.items():
            delta_key = window_key_bytes(key) + b"@%d" % revision
            changelog.append((delta_key, delta_state(window, live.plans[key[0]], change.new_members, key)))
            window.deltas.append(delta_key)
        if revision == 2:  # checkpoint after the third batch only: the rest is the tail
            store.save("orders", 0, live, {k: w for k, (w, _) in outcome.touched.items()} | dict(live.windows), [],
                       checkpoint=len(changelog) - 1)
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


def test_windows_restored_from_the_tail_survive_the_next_checkpoint(tmp_path: Path) -> None:
    """A restart applies the changelog tail; its next checkpoint must not skip the windows that only
    the tail held (a late event's window, touched once): restore saves what the tail changed."""
    silver = silver_rows("orders", 1_000, seed=4)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    writer = PartitionWindows(CONTRACT, silver_partitions=1)
    changelog: list[tuple[bytes, bytes]] = []
    for revision, start in enumerate(range(0, 1_000, 250)):
        batch = silver.slice(start, 250).append_column("_watermark", pa.nulls(250, pa.int64()))
        for key, (window, change) in writer.apply(con, batch, revision).touched.items():
            delta_key = window_key_bytes(key) + b"@%d" % revision
            changelog.append((delta_key, delta_state(window, writer.plans[key[0]], change.new_members, key)))
            window.deltas.append(delta_key)
    store = WindowStore(tmp_path)
    restarted = PartitionWindows(CONTRACT, silver_partitions=1)
    assert store.load("orders", 0, restarted) is None  # no checkpoint: the whole changelog is the tail
    tail = TailReplay(restarted)  # as the aggregator's restore uses it
    tail.apply(ChangelogEntry(offset, key, value) for offset, (key, value) in enumerate(changelog))
    tail.finish(store, "orders", 0)
    assert tail.applied == len(changelog)
    # the next batch touches one window only, and moves the checkpoint past the tail
    key, window = next(iter(restarted.windows.items()))
    store.save("orders", 0, restarted, {key: window}, [], checkpoint=len(changelog) + 5)
    store.close("orders", 0)

    again = PartitionWindows(CONTRACT, silver_partitions=1)
    assert WindowStore(tmp_path).load("orders", 0, again) == len(changelog) + 5
    assert snapshot(again) == snapshot(writer)


def test_rows_encoded_before_the_next_batch_checkpoint_the_state_they_were_encoded_from(tmp_path: Path) -> None:
    """The aggregator encodes a batch's checkpoint rows when it prepares the batch and writes them after
    the commit, possibly once the next batch has changed the windows: the checkpoint must hold the
    state of the committed batch, not the later one."""
    silver = silver_rows("orders", 1_000, seed=13)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    live = PartitionWindows(CONTRACT, silver_partitions=1)

    def apply(start: int, revision: int) -> dict:
        batch = silver.slice(start, 500).append_column("_watermark", pa.nulls(500, pa.int64()))
        outcome = live.apply(con, batch, revision)
        return {key: window for key, (window, _) in outcome.touched.items()}

    rows = checkpoint_rows(live, apply(0, 1), [])
    committed = copy.deepcopy(snapshot(live))  # the sets would change with the windows
    apply(500, 2)  # the next batch, prepared before the first one's checkpoint is written
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
