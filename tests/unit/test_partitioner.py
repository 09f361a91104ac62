"""Keys hashed many at a time land where the Java client's default partitioner (murmur2) puts them, as
:func:`partition_for` (aiokafka's murmur2) does one key at a time."""

from __future__ import annotations

import random

import pytest

from archlab.kafka.clients import partition_for, partitions_for


@pytest.mark.parametrize("partitions", [1, 3, 4, 12, 1000])
def test_keys_hashed_together_go_where_each_alone_goes(partitions: int) -> None:
    rnd = random.Random(partitions)
    keys = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 41))) for _ in range(3_000)]
    keys += ["clé-ü-€".encode(), b'["totals_1h","2026-12-01T05:00:00.000Z"]', b""]
    assert partitions_for(keys, partitions) == [partition_for(key, partitions) for key in keys]


def test_no_keys_no_partitions() -> None:
    assert partitions_for([], 4) == []
