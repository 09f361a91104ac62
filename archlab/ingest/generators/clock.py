"""Virtual event time: a Poisson arrival process whose rate follows a seasonal profile.

Arrivals are drawn by time rescaling: unit exponential gaps are laid on the cumulative
intensity, which is piecewise constant per wall-clock minute. That is exact for the profile,
fully vectorised, and seamless across blocks because each minute's rate depends only on the
minute itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Profile = Callable[[np.ndarray], np.ndarray]
"""Maps absolute times (ms since the epoch, float) to rate multipliers (> 0, mean about 1)."""


def flat_profile(times_ms: np.ndarray) -> np.ndarray:
    """A constant rate, for sources that report on a timer rather than on human activity."""
    return np.ones_like(times_ms, dtype=np.float64)


def iso_ms(times_ms: np.ndarray) -> list[str]:
    """Render epoch milliseconds as ISO-8601 UTC strings with milliseconds and 'Z', vectorised."""
    as_dt = np.asarray(times_ms, dtype=np.int64).astype("datetime64[ms]")
    return np.datetime_as_string(as_dt, unit="ms", timezone="UTC").tolist()


def to_epoch_ms(start: datetime) -> int:
    """Epoch milliseconds of a timezone-aware datetime; naive ones are refused as ambiguous."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return (start - _EPOCH) // timedelta(milliseconds=1)


class ArrivalClock:
    """Draws the event times of consecutive arrivals, advancing a virtual clock."""

    def __init__(self, start_ms: int, events_per_second: float, profile: Profile, profile_min: float) -> None:
        if not events_per_second > 0:
            raise ValueError(f"events_per_second must be > 0, got {events_per_second}")
        if not profile_min > 0:
            raise ValueError("the seasonal profile must stay above zero")
        self._clock = float(start_ms)
        self._rate_per_ms = events_per_second / 1000.0
        self._profile = profile
        self._profile_min = profile_min

    def average_over(self, end_ms: int) -> None:
        """Make the rate the mean over the span from the clock to ``end_ms``, whatever the profile there
        (a backfill's count must fit its span even if the span is a quiet night): the profile's weight over
        the span, minute by minute as ``advance`` applies it, is divided out. The rate is then raised by
        three standard deviations of the span's Poisson count, so the last arrival falls before ``end_ms``
        in all but about one run in a thousand instead of half of them (a backfill must not reach the future)."""
        start = self._clock
        if end_ms <= start:
            raise ValueError("the span must end after the clock")
        inner = np.arange(np.floor(start / MINUTE_MS) + 1, np.ceil(end_ms / MINUTE_MS)) * MINUTE_MS
        edges = np.concatenate(([start], inner, [end_ms]))
        minute_mid = np.floor(edges[:-1] / MINUTE_MS) * MINUTE_MS + MINUTE_MS / 2
        weight = float(np.sum(self._profile(minute_mid) * np.diff(edges))) / (end_ms - start)
        self._rate_per_ms /= weight
        expected = self._rate_per_ms * (end_ms - start)
        self._rate_per_ms *= 1 + 3 / np.sqrt(max(expected, 1.0))

    def flat(self) -> ArrivalClock:
        """The same mean rate from the same moment on, without the seasonal profile."""
        return ArrivalClock(int(self._clock), self._rate_per_ms * 1000.0, flat_profile, 1.0)

    def advance(self, unit_gaps: np.ndarray) -> np.ndarray:
        """Event times (int ms) for arrivals separated by the given unit-rate exponential gaps."""
        targets = np.cumsum(unit_gaps)
        start = self._clock
        # Enough whole minutes to cover the targets even if the rate sat at its minimum throughout.
        per_minute_floor = self._rate_per_ms * MINUTE_MS * self._profile_min
        n_buckets = int(np.ceil(targets[-1] / per_minute_floor)) + 2
        first_boundary = (np.floor(start / MINUTE_MS) + 1) * MINUTE_MS
        ends = first_boundary + MINUTE_MS * np.arange(n_buckets, dtype=np.float64)
        starts = np.concatenate(([start], ends[:-1]))
        minute_mid = np.floor(starts / MINUTE_MS) * MINUTE_MS + MINUTE_MS / 2
        rate = self._rate_per_ms * self._profile(minute_mid)
        cumulative = np.concatenate(([0.0], np.cumsum(rate * (ends - starts))))
        bucket = np.searchsorted(cumulative, targets, side="right") - 1
        times = starts[bucket] + (targets - cumulative[bucket]) / rate[bucket]
        self._clock = float(times[-1])
        return np.floor(times).astype(np.int64)
