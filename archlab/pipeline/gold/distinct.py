"""The values a ``count_distinct`` window has seen, exactly, in a few bytes each once there are many.

An hourly window of a busy stream holds an hour's distinct ids: as a Python set of ``str``, ~100 bytes
per id (the object, its hash slot, the set's slack); as a sorted NumPy array of the ids' UTF-8 bytes,
the id's length plus one. A set stays a plain Python set while it is small, where that is fastest and
where most windows stay; past :data:`COMPACT_AT` values it keeps them in a sorted array, and new values
wait in a Python set of at most a sixteenth of the array's size before they are merged in one pass.
Membership is exact: values are compared whole, never by hash. Strings and integers are compacted;
values of other types (rare in a distinct count, and few) stay in the Python set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

COMPACT_AT = 1 << 18
"""Values a set holds (~25 MB as Python objects) before it moves them into a sorted array. A value added
to the array costs ~1.5 µs more than to a set (searched, converted, sorted, merged: at 64k, gold under a
backlog, where even minute windows hold 100k ids, ran 12-15 % slower), so only the few sets that would
take real memory pay it: an hour's ids of a busy stream, not a minute's."""
END = 0xFF
"""Appended to each string's UTF-8 bytes: NumPy's fixed-width bytes drop trailing NULs, and UTF-8 never
holds 0xff, so ``"a"`` and ``"a\\x00"`` stay two values."""


class DistinctValues:
    """The set of values one ``count_distinct`` measure of one window has seen."""

    __slots__ = ("_recent", "_sorted", "_merge_at")

    def __init__(self) -> None:
        self._recent: set[Any] = set()
        self._sorted: np.ndarray | None = None  # the values merged so far, sorted; None while few
        self._merge_at: float = COMPACT_AT  # size of the Python set that triggers a merge

    def __len__(self) -> int:
        return len(self._recent) + (0 if self._sorted is None else len(self._sorted))

    def __contains__(self, value: Any) -> bool:
        return not self._unseen([value])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DistinctValues):
            return NotImplemented
        return len(self) == len(other) and not other._unseen(self.values())

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"DistinctValues({len(self)} values)"

    def values(self) -> list[Any]:
        """Every value, as it was added (strings as ``str``)."""
        if self._sorted is None:
            merged = []
        elif self._sorted.dtype.kind == "S":
            merged = [value[:-1].decode() for value in self._sorted.tolist()]
        else:
            merged = self._sorted.tolist()
        return [*merged, *self._recent]

    def add_new(self, values: list[Any]) -> list[Any]:
        """Add ``values`` (distinct among themselves, as DuckDB's ``list_distinct`` gives them); return
        those not held before, in their order."""
        new = self._unseen(values)
        if new:
            self._recent.update(new)
            if len(self._recent) > self._merge_at:
                self._merge()
        return new

    def _unseen(self, values: list[Any]) -> list[Any]:
        """Those of ``values`` not held, in their order."""
        recent = self._recent
        new = [value for value in values if value not in recent]
        if new and self._sorted is not None:
            held = self._held(new)
            new = [value for value, known in zip(new, held.tolist(), strict=True) if not known]
        return new

    def _held(self, values: list[Any]) -> np.ndarray:
        """Which of ``values`` the sorted array holds (one vectorised binary search); a value of another
        type than the array's is none of its values."""
        merged = self._sorted
        assert merged is not None
        probe = _array(values, merged.dtype.kind)
        held = np.zeros(len(values), dtype=bool)
        if probe is None:  # of mixed types, or integers beyond 64 bits: search those of the array's type
            alike = [i for i, value in enumerate(values) if _fits(value, merged.dtype.kind)]
            if 0 < len(alike) < len(values):
                held[alike] = self._held([values[i] for i in alike])
            return held
        if probe.dtype.kind == "S" and probe.itemsize > merged.itemsize:
            fits = np.char.str_len(probe) <= merged.itemsize  # a longer value is none of them
            held[fits] = _found(merged, probe[fits].astype(merged.dtype))
            return held
        return _found(merged, probe.astype(merged.dtype, copy=False))

    def _merge(self) -> None:
        """Move the recent values into the sorted array: one copy of it, not one per value."""
        recent = list(self._recent)
        kind = None if self._sorted is None else self._sorted.dtype.kind
        incoming = _array(recent, kind)
        if incoming is None:  # not strings or integers of 64 bits, or not all of the array's type
            self._merge_at = math.inf  # new values stay in the Python set from now on
            return
        incoming.sort()
        merged = self._sorted
        if merged is not None:
            if incoming.dtype.kind == "S" and incoming.itemsize != merged.itemsize:
                width = f"S{max(incoming.itemsize, merged.itemsize)}"
                incoming, merged = incoming.astype(width), merged.astype(width)
            incoming = np.insert(merged, np.searchsorted(merged, incoming), incoming)
        self._sorted, self._recent = incoming, set()
        self._merge_at = max(COMPACT_AT >> 4, len(incoming) >> 4)


def _found(merged: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Which of ``probe`` (of ``merged``'s dtype) the sorted array ``merged`` holds."""
    at = np.minimum(np.searchsorted(merged, probe), len(merged) - 1)
    return merged[at] == probe


def _fits(value: Any, kind: str) -> bool:
    """Whether ``value`` can be a member of a sorted array of this kind (bytes or int64)."""
    if kind == "S":
        return type(value) is str
    return type(value) is int and -(2**63) <= value < 2**63


def _array(values: list[Any], kind: str | None) -> np.ndarray | None:
    """``values`` as an array that sorts and compares them exactly (strings as UTF-8 bytes ending in
    :data:`END`, integers as int64), or None if they are not all of one such type (``kind``: the one
    the sorted array has, if any)."""
    types = set(map(type, values))
    if types == {str} and kind in (None, "S"):
        return _utf8_fixed(values)
    if types == {int} and kind in (None, "i"):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:  # beyond 64 bits: left in the Python set
            return None
    return None


def _utf8_fixed(values: list[str]) -> np.ndarray:
    """Strings as fixed-width bytes, each its UTF-8 then END, without a Python object per value: Arrow
    encodes them in one pass, NumPy lays the bytes out row by row."""
    text = pa.array(values, type=pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64, count=len(values) + 1)
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8, count=int(offsets[-1])) if offsets[-1] else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    longest = int(lengths.max())
    rows = np.zeros((len(values), longest + 1), dtype=np.uint8)
    if int(lengths.min()) == longest:  # ids of one length, the usual case: the bytes are already rows
        rows[:, :longest] = data.reshape(len(values), longest)
    else:
        rows[np.arange(longest + 1) < lengths[:, None]] = data
    rows[np.arange(len(values)), lengths] = END
    return rows.view(f"S{longest + 1}").ravel()
