"""De-duplication state: duplicates found within and across batches, bounded by the horizon."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from aiokafka import TopicPartition

from archlab.core import names
from archlab.pipeline.silver import dedup
from archlab.pipeline.silver.dedup import DedupState

TP = TopicPartition(names.raw_topic("shop"), 0)
HOUR = 3_600_000


def test_repeats_within_and_across_batches_are_duplicates() -> None:
    state = DedupState(horizon_ms=24 * HOUR)
    assert state.first_seen(TP.topic, [0, 0, 0], [b"a", b"b", b"a"], [1, 2, 3]) == [True, True, False]
    assert state.first_seen(TP.topic, [0, 0, 1], [b"b", b"c", b"a"], [4, 5, 6]) == [False, True, True]


def test_restore_makes_a_restarted_refiner_remember() -> None:
    state = DedupState(horizon_ms=HOUR)
    state.restore(TP, {b"a": 10 * HOUR, b"old": 8 * HOUR})
    assert state.first_seen(TP.topic, [0], [b"a"], [10 * HOUR + 1]) == [False]
    assert state.first_seen(TP.topic, [0], [b"old"], [10 * HOUR + 2]) == [True]  # beyond the horizon: forgotten


def test_memory_stays_bounded_by_the_horizon(monkeypatch) -> None:
    monkeypatch.setattr(dedup, "EVICT_EVERY", 100)
    state = DedupState(horizon_ms=1_000)
    for start in range(0, 100_000, 100):
        keys = [str(i).encode() for i in range(start, start + 100)]
        state.first_seen(TP.topic, [0] * 100, keys, list(range(start, start + 100)))
    assert state.size() <= 1_000 + 100


def test_keys_are_kept_off_the_python_heap() -> None:
    """A day of keys at the demo rate is ~17 million per dataset; as a dict that was ~170 MB per million.
    Here 200,000 keys leave the Python heap as it was (the dict this replaced grew it by 10 MiB)."""
    state = DedupState(horizon_ms=24 * HOUR)
    batches = [[f"{start + i:036d}".encode() for i in range(4_000)] for start in range(0, 200_000, 4_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, keys in enumerate(batches):
            assert all(state.first_seen(TP.topic, [n % 4] * len(keys), keys, [n] * len(keys)))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert state.size() == 200_000
    assert not any(True in state.first_seen(TP.topic, [n % 4] * 10, keys[:10], [n] * 10) for n, keys in enumerate(batches))
    assert grown < 2 * 2**20, f"the Python heap grew by {grown / 2**20:.1f} MiB"


def test_stores_left_by_a_killed_process_are_removed_by_the_next(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                            check=True).stdout.strip()  # a process id no longer in use
    left = tmp_path / f"archlab-silver-keys-{killed}-abc"
    (left / "x.raw-0").mkdir(parents=True)
    state = DedupState(horizon_ms=HOUR)
    assert state.first_seen(TP.topic, [0], [b"a"], [1]) == [True]
    assert not left.exists()
    assert [p.name.split("-")[3] for p in tmp_path.iterdir()] == [str(os.getpid())]


def test_a_restore_larger_than_one_write_keeps_every_key(monkeypatch) -> None:
    monkeypatch.setattr(dedup, "RESTORE_CHUNK", 7)
    state = DedupState(horizon_ms=HOUR)
    state.restore(TP, {f"k{i}".encode(): 5 * HOUR + i for i in range(50)})
    assert state.size() == 50
    assert state.first_seen(TP.topic, [0] * 51, [f"k{i}".encode() for i in range(51)], [6 * HOUR] * 51) == [False] * 50 + [True]
