"""De-duplication state, kept per source partition and bounded by the contract's horizon.

The state is a compacted changelog topic, ``<dataset>.silver-dedup``, with one partition per raw
partition. Its records are written in the same Kafka transaction as the refined output and the
consumer offsets, so after a crash the state holds exactly the keys whose output committed:
a faust table's changelog, written by faust's own producer outside our transaction, could not
promise that (see faust-streaming issues #177, #517, #323 on its exactly-once mode).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from aiokafka import TopicPartition

from archlab.core import names
from archlab.core.settings import Settings
from archlab.kafka.clients import read_to_end

_EVENT_MS = struct.Struct(">q")


EVICT_EVERY = 50_000  # new keys between two sweeps of expired ones


@dataclass(slots=True)
class _PartitionState:
    seen: dict[bytes, int] = field(default_factory=dict)  # dedup key -> event time (ms)
    watermark_ms: int = 0  # highest event time seen in the partition
    added: int = 0  # keys added since the last sweep

    def sweep(self, horizon_ms: int) -> None:
        """Forget keys older than the horizon behind the partition's highest event time."""
        oldest = self.watermark_ms - horizon_ms
        self.seen = {key: ms for key, ms in self.seen.items() if ms >= oldest}
        self.added = 0


class DedupState:
    """Which de-duplication keys each assigned raw partition has already let through."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._partitions: dict[TopicPartition, _PartitionState] = {}

    def first_seen(
        self, topic: str, partitions: Sequence[int], keys: Sequence[bytes], event_ms: Sequence[int]
    ) -> list[bool]:
        """For each row (of any partition of ``topic``), True when its key is new in its partition.

        New keys are recorded; a key repeated inside the same batch is a duplicate too. A key older
        than the horizon behind the partition's newest event has been forgotten and passes as new.
        """
        states: dict[int, _PartitionState] = {}
        result = []
        for partition, key, ms in zip(partitions, keys, event_ms, strict=True):
            state = states.get(partition)
            if state is None:
                state = states[partition] = self._partitions.setdefault(
                    TopicPartition(topic, partition), _PartitionState()
                )
            new = key not in state.seen
            if new:
                state.seen[key] = ms
                state.added += 1
                if ms > state.watermark_ms:
                    state.watermark_ms = ms
            result.append(new)
        for state in states.values():
            if state.added >= EVICT_EVERY:
                state.sweep(self.horizon_ms)
        return result

    def restore(self, tp: TopicPartition, entries: dict[bytes, int]) -> None:
        state = _PartitionState(dict(entries), max(entries.values(), default=0))
        state.sweep(self.horizon_ms)
        self._partitions[tp] = state

    def drop(self, tp: TopicPartition) -> None:
        self._partitions.pop(tp, None)

    def size(self) -> int:
        return sum(len(p.seen) for p in self._partitions.values())


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
