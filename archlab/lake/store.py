"""The lake's bucket behind one small interface: MinIO through s3fs in services, a local folder offline.

Tables on it are written and read through :mod:`archlab.lake.tables` (Delta); this module gives their
location (``url``), lists and reads single objects, creates the bucket, and says which instants a
date partition can hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import fsspec
import fsspec.asyn
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem

from archlab.core.settings import Settings

log = logging.getLogger(__name__)

CALENDAR_SECONDS = (-62_135_596_800, 253_402_300_800)
"""Epoch seconds of 0001-01-01T00:00Z and of 10000-01-01T00:00Z (excluded): the instants a ``dt=`` folder,
Python and DuckDB can all hold. A Kafka timestamp is any int64 its producer chose, so it may lie outside."""
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000}  # int64 nanoseconds cannot leave the calendar


class Lake:
    """The bucket (or folder) that holds every layer; keys are relative to it."""

    def __init__(self, open_fs: Callable[[], fsspec.AbstractFileSystem], root: str, *, is_s3: bool) -> None:
        self._open_fs = open_fs
        self.root = root.rstrip("/")
        self.is_s3 = is_s3

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """Opened on first use: s3fs and botocore cost a process ~40 MB, and the api needs them only to
        go back in time by timestamp (commit times are read from the log's files)."""
        return self._open_fs()

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(lambda: fsspec.filesystem("s3", use_listings_cache=False, **settings.storage_options),
                   settings.bucket, is_s3=True)

    @classmethod
    def local(cls, folder: Path) -> Lake:
        """An offline lake in a local folder, for unit tests where S3 adds nothing."""
        folder.mkdir(parents=True, exist_ok=True)
        return cls(lambda: LocalFileSystem(auto_mkdir=True), str(folder), is_s3=False)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def url(self, key: str = "") -> str:
        """A URL DuckDB and pyarrow understand (``s3://bucket/key`` or a local path)."""
        return f"s3://{self.path(key)}" if self.is_s3 else self.path(key)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def read_json(self, key: str) -> object | None:
        data = self.read_bytes(key)
        return None if data is None else orjson.loads(data)

    def list(self, prefix: str) -> list[str]:
        """Keys of every object under a prefix (recursive), without the root."""
        try:
            paths = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        offset = len(self.root) + 1
        return sorted(path[offset:] for path in paths)


def clamp_to_calendar(stamps: pa.Array | pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, pa.Array | pa.ChunkedArray]:
    """Timestamps moved inside ``CALENDAR_SECONDS`` (in their own unit), and which of them were outside."""
    per_second = _PER_SECOND.get(stamps.type.unit)
    if per_second is None:
        return stamps, pc.and_(pc.is_valid(stamps), False)  # every value is inside
    raw = stamps.cast(pa.int64())
    low = pa.scalar(CALENDAR_SECONDS[0] * per_second, pa.int64())
    high = pa.scalar(CALENDAR_SECONDS[1] * per_second - 1, pa.int64())
    outside = pc.or_(pc.less(raw, low), pc.greater(raw, high))
    inside = pc.min_element_wise(pc.max_element_wise(raw, low, skip_nulls=False), high, skip_nulls=False)
    return inside.cast(stamps.type), outside


def calendar_date(stamps: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The UTC date of each timestamp, a stamp outside the calendar on its first or last day: the date
    partition (``dt``) of a row, which every reader and folder can hold whatever the stamp."""
    return clamp_to_calendar(stamps)[0].cast(pa.date32())


def ensure_bucket(settings: Settings) -> bool:
    """Create the lake bucket if it does not exist; True when it was created now."""
    import s3fs  # only here: see Lake.fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **settings.storage_options)
    try:
        fs.mkdir(settings.bucket)
    except FileExistsError:
        return False
    finally:  # now, on fsspec's loop: left to the garbage collector (or to s3fs's close_session from a
        # thread running another loop), the running asyncio loop would try and fail
        fsspec.asyn.sync(fs.loop, fs.s3.close)
    log.info("created bucket %s", settings.bucket)
    return True
