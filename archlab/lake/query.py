"""Reading the lake: one DuckDB connection factory (so tests, ``lab status`` and the API agree), and
the size of a table read from its listing and Parquet footers alone."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from archlab.core import names, sql
from archlab.lake.store import Lake

FOOTER_TAIL_BYTES = 16 * 1024
"""Read first from the end of each object: the pipeline's footers take a few KiB; a larger one (many
columns or row groups) costs one more read of exactly its size."""
CONCURRENT_READS = 64
"""Footer reads in flight at once against S3 (and so the batch between two looks at the deadline)."""
PARQUET_TRAILER_BYTES = 8
"""A Parquet file ends with the footer's length (4 bytes, little-endian) and the magic ``PAR1``."""


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads the lake through the lake's own fsspec filesystem.

    Registering s3fs avoids the httpfs extension, which DuckDB would download at run time.
    """
    connection = sql.connect(threads=None)
    if lake.is_s3:
        connection.register_filesystem(lake.fs)
    return connection


def layer_glob(lake: Lake, layer: str, dataset: str, subdir: str | None = None) -> str:
    """The Parquet glob of a layer's dataset, for ``read_parquet(..., hive_partitioning=true)``."""
    return lake.url(f"{names.table_path(layer, dataset, subdir)}/**/*.parquet")


@dataclass(frozen=True)
class TableStats:
    """How big one lake table is: its objects and bytes (from one listing) and its rows.

    Plain Parquet folders keep row counts in each object's footer, so rows cost one small ranged
    read per object. A table format with a log (Delta's ``add`` actions carry ``numRecords``) gives
    the same figures from the log alone: ``table_stats`` is the one place to read it instead.
    """

    objects: int = 0
    bytes: int = 0
    rows: int = 0
    rows_exact: bool = True
    """False when some footers were not read in time and their rows were estimated from their bytes."""


def table_stats(lake: Lake, layer: str, dataset: str, deadline: float | None = None) -> TableStats:
    """Objects, bytes and rows of a layer's dataset; zeros when nothing has landed yet.

    Footers are read a batch at a time until ``deadline`` (a ``time.monotonic()`` instant; None: all
    of them), one batch at least. The rows of objects left unread are estimated at the rows per byte
    of those read, so a lake of any size answers in bounded time. An object removed between the
    listing and its footer read (compaction replaced it) is left out.
    """
    try:
        found = lake.fs.find(lake.path(names.table_path(layer, dataset)), detail=True)
    except FileNotFoundError:
        found = {}
    sizes = {path: int(info["size"]) for path, info in found.items() if path.endswith(".parquet")}
    pending = sorted(sizes, key=lambda path: zlib.crc32(path.encode()))  # a spread-out sample, the same each time
    rows: dict[str, int] = {}
    while pending and (not rows or deadline is None or time.monotonic() < deadline):
        batch, pending = pending[:CONCURRENT_READS], pending[CONCURRENT_READS:]
        rows |= _rows_from_footers(lake, {path: sizes[path] for path in batch})
    read_bytes = sum(sizes[path] for path in rows)
    unread_bytes = sum(sizes[path] for path in pending)
    estimated = round(sum(rows.values()) * unread_bytes / read_bytes) if unread_bytes and read_bytes else 0
    return TableStats(objects=len(rows) + len(pending), bytes=read_bytes + unread_bytes,
                      rows=sum(rows.values()) + estimated, rows_exact=not pending)


def _rows_from_footers(lake: Lake, sizes: dict[str, int]) -> dict[str, int]:
    """Rows per object, parsed from a tail of each object (fetched concurrently); a footer longer
    than the first tail costs one more read of exactly its length."""
    rows: dict[str, int] = {}
    longer: dict[str, int] = {}
    for path, tail in _read_tails(lake, {path: min(size, FOOTER_TAIL_BYTES) for path, size in sizes.items()}, sizes).items():
        footer = int.from_bytes(tail[-PARQUET_TRAILER_BYTES:-4], "little") + PARQUET_TRAILER_BYTES
        if footer > len(tail):
            longer[path] = footer
        else:
            rows[path] = pq.read_metadata(pa.BufferReader(tail)).num_rows
    for path, tail in _read_tails(lake, longer, sizes).items():
        rows[path] = pq.read_metadata(pa.BufferReader(tail)).num_rows
    return rows


def _read_tails(lake: Lake, lengths: dict[str, int], sizes: dict[str, int]) -> dict[str, bytes]:
    """The last ``lengths[path]`` bytes of each object; objects gone meanwhile are left out."""
    if not lengths:
        return {}
    paths = list(lengths)
    bounded = {"batch_size": CONCURRENT_READS} if lake.is_s3 else {}
    tails = lake.fs.cat_ranges(paths, [sizes[p] - lengths[p] for p in paths], [sizes[p] for p in paths],
                               on_error="return", **bounded)
    found = {}
    for path, tail in zip(paths, tails, strict=True):
        if isinstance(tail, FileNotFoundError):
            continue
        if isinstance(tail, BaseException):
            raise tail
        found[path] = tail
    return found
