"""Gold windows of a range, recomputed from its silver rows by the stream's own window arithmetic
(:class:`~archlab.pipeline.gold.windows.PartitionWindows`) and shaped by the gold sink's own encoder.

A batch sees the range's history whole, so it has no watermark: every event counts in its window (the
stream counts an event that arrives later than the grace period in ``late_events`` instead), and every
window is written final. Backfilled rows carry ``BACKFILL_REVISION``, above any Kafka offset, so that a
late update the stream may still emit for a final window never replaces a backfilled row.
"""

from __future__ import annotations

import orjson
import pyarrow as pa

from archlab.contract import Contract
from archlab.core import sql
from archlab.pipeline.gold.tables import GoldEncoder
from archlab.pipeline.gold.windows import PartitionWindows

BACKFILL_REVISION = 1 << 62
"""The revision of every backfilled gold row: higher than any offset the stream's revisions come from."""
CHUNK_ROWS = 200_000


def gold_tables(contract: Contract, silver: pa.Table) -> dict[str, pa.Table]:
    """Lake path -> the rows of that aggregate's gold table for the windows of ``silver`` (sorted by key)."""
    if not contract.aggregates:
        return {}
    windows = PartitionWindows(contract, silver_partitions=1)  # never reported: no watermark, nothing late
    inputs = silver.select(contract.gold_inputs.names)
    con = sql.connect()
    for offset in range(0, inputs.num_rows, CHUNK_ROWS):
        batch = inputs.slice(offset, CHUNK_ROWS)
        batch = batch.append_column("_watermark", pa.nulls(batch.num_rows, pa.int64()))
        windows.apply(con, batch, revision=BACKFILL_REVISION)
    values = [orjson.dumps({**windows.gold_value(key, window), "final": True})
              for key, window in sorted(windows.windows.items(), key=lambda item: repr(item[0]))]
    encoder = GoldEncoder({contract.dataset: contract})
    found = encoder.tables(contract.dataset, values) if values else {}
    return {target.path: found.get(target.path, target.schema.empty_table())
            for target in encoder.targets(contract.dataset)}
