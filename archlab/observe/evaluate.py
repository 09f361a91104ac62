"""Objective evaluation and alert transitions as pure functions over plain data, so that they are
tested without Kafka and the faust agents only move state in and out of their tables.

Time is epoch seconds throughout. A measure is what one objective reads now; :func:`step` turns a
stream of measures into open/resolve decisions without flapping:

* an alert opens once a breach has held for ``settle`` seconds — except where the measure is itself
  a duration that already held for the objective (freshness, a consumer stall): then the breach is
  known to have begun at ``Measure.breached_since`` and opens at once;
* an open alert resolves once the objective has been met for ``settle`` seconds;
* a measure that cannot be taken (volume before its samples span a minute) changes nothing and resets
  any pending change: no evidence either way;
* a rate's window without records meets its objective (nothing in it failed): an alert a burst opened
  resolves once the dataset has been quiet for the window, instead of staying open until records come
  again (a quiet dataset is freshness's to report).

The alert id comes from the breach's start (:func:`archlab.core.alerts.alert_id`), which the state
kept in faust tables fixes, so the same breach gets the same id after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from archlab.contract import Objectives, RateObjective

Buckets = list[list[float]]
"""A rate's window: ``[bucket start, failed, total]`` rows, oldest first (JSON-friendly for faust tables)."""

BUCKETS_PER_WINDOW = 60


def bucket_width(over_s: float) -> float:
    """A window of ``over_s`` seconds is kept in about 60 buckets (at least 1 s wide)."""
    return max(1.0, over_s / BUCKETS_PER_WINDOW)


def add_to_window(buckets: Buckets, at: float, failed: float, total: float, over_s: float) -> Buckets:
    """``buckets`` with one batch's counts added at arrival time ``at``, buckets older than the
    window dropped (relative to the newest bucket, so replaying old records never drops new ones)."""
    width = bucket_width(over_s)
    start = at // width * width
    out = [list(row) for row in buckets]
    for row in out:
        if row[0] == start:
            row[1] += failed
            row[2] += total
            break
    else:
        out.append([start, failed, total])
        out.sort(key=lambda row: row[0])
    newest = out[-1][0]
    return [row for row in out if row[0] > newest - over_s - width]


def window_rate(windows: list[Buckets], now: float, over_s: float) -> tuple[float, float] | None:
    """(failed share, records) over the last ``over_s`` seconds of every partition's window; None when
    no record arrived in that time."""
    failed = total = 0.0
    since = now - over_s
    for buckets in windows:
        for start, bad, count in buckets:
            if start + bucket_width(over_s) > since and start <= now:
                failed += bad
                total += count
    return (failed / total, total) if total else None


class Kind(StrEnum):
    FRESHNESS = "freshness"
    QUARANTINE_RATE = "quarantine_rate"
    LATE_RATE = "late_rate"
    VOLUME = "volume"
    CONSUMER_STALL = "consumer_stall"


@dataclass(frozen=True, slots=True)
class Measure:
    """One objective's reading: its value, its threshold, and whether that is a breach."""

    objective: str
    value: float
    threshold: float
    unit: str
    breached: bool
    message: str
    breached_since: float | None = None  # set when the value itself proves how long the breach has held


def freshness(dataset: str, last_arrival: float, now: float, objective_s: float) -> Measure:
    """Seconds since ``<dataset>.raw`` last grew, against the objective."""
    age = max(0.0, now - last_arrival)
    breached = age > objective_s
    message = (f"{dataset}: no new record for {_duration(age)}" if breached
               else f"{dataset}: records arrive, the last {_duration(age)} ago")
    return Measure(Kind.FRESHNESS, round(age, 1), objective_s, "s", breached,
                   f"{message} (objective {_duration(objective_s)})", last_arrival + objective_s if breached else None)


def rate(dataset: str, kind: Kind, what: str, windows: list[Buckets], now: float,
         objective: RateObjective) -> Measure:
    """The failed share of the last ``objective.over`` against ``objective.max`` (met without records)."""
    over_s = objective.over.total_seconds()
    measured = window_rate(windows, now, over_s)
    if measured is None:
        return Measure(kind, 0.0, objective.max, "ratio", False,
                       f"{dataset}: no records in the last {_duration(over_s)}, none {what} "
                       f"(objective at most {objective.max:.1%})")
    share, records = measured
    return Measure(kind, round(share, 6), objective.max, "ratio", share > objective.max,
                   f"{dataset}: {share:.1%} of {records:.0f} records {what} in the last {_duration(over_s)} "
                   f"(objective at most {objective.max:.1%})")


def volume(dataset: str, ends: list[list[float]], now: float, min_per_minute: float) -> Measure | None:
    """Records per minute on ``<dataset>.raw`` over the last minute, from ``[sample time, end offset]``
    pairs; None until the samples span a minute."""
    span = [pair for pair in ends if pair[0] >= now - 60]
    older = [pair for pair in ends if pair[0] < now - 60]
    if not older or not span:
        return None
    first, last = older[-1], span[-1]
    per_minute = (last[1] - first[1]) / max(last[0] - first[0], 1e-9) * 60
    return Measure(Kind.VOLUME, round(per_minute, 1), min_per_minute, "records/min", per_minute < min_per_minute,
                   f"{dataset}: {per_minute:.0f} records/min arrived (objective at least {min_per_minute:g})")


def consumer_stall(dataset: str, stalled_since: dict[str, float], now: float, objective_s: float) -> Measure:
    """The longest a watched group has had records waiting without committing, against the objective."""
    group, since = max(stalled_since.items(), key=lambda item: now - item[1], default=("", now))
    stalled = max(0.0, now - since)
    breached = stalled > objective_s
    message = (f"{dataset}: consumer group {group} made no progress for {_duration(stalled)} with records waiting"
               if group else f"{dataset}: no consumer group has records waiting")
    if group and not breached:
        message = f"{dataset}: every consumer group makes progress (longest wait {_duration(stalled)}, {group})"
    return Measure(Kind.CONSUMER_STALL, round(stalled, 1), objective_s, "s", breached,
                   f"{message} (objective {_duration(objective_s)})", since + objective_s if breached else None)


@dataclass(frozen=True, slots=True)
class Change:
    """A decision of :func:`step`: open an alert for a breach that began at ``breach_started``, or resolve."""

    opens: bool
    breach_started: float


def step(is_open: bool, pending_since: float | None, measure: Measure | None, now: float,
         settle_s: float) -> tuple[float | None, Change | None]:
    """The next ``pending_since`` (when the opposite of the current state began to hold) and the
    change due now, if any. See the module docstring for the rules."""
    if measure is None:
        return None, None
    if not is_open:
        if not measure.breached:
            return None, None
        if measure.breached_since is not None:
            return None, Change(True, measure.breached_since)
        since = pending_since if pending_since is not None else now
        return (None, Change(True, since)) if now - since >= settle_s else (since, None)
    if measure.breached:
        return None, None
    since = pending_since if pending_since is not None else now
    return (None, Change(False, since)) if now - since >= settle_s else (since, None)


def measures(dataset: str, objectives: Objectives, now: float, *, last_arrival: float,
             ends: list[list[float]], stalled_since: dict[str, float], quarantine: list[Buckets],
             late: list[Buckets]) -> dict[str, Measure | None]:
    """Every enabled objective's measure for one dataset now."""
    out: dict[str, Measure | None] = {}
    if objectives.freshness is not None:
        out[Kind.FRESHNESS] = freshness(dataset, last_arrival, now, objectives.freshness.total_seconds())
    if objectives.quarantine_rate is not None:
        out[Kind.QUARANTINE_RATE] = rate(dataset, Kind.QUARANTINE_RATE, "quarantined", quarantine, now,
                                         objectives.quarantine_rate)
    if objectives.late_rate is not None:
        out[Kind.LATE_RATE] = rate(dataset, Kind.LATE_RATE, "too late", late, now, objectives.late_rate)
    if objectives.volume is not None:
        out[Kind.VOLUME] = volume(dataset, ends, now, objectives.volume.min_per_minute)
    if objectives.consumer_stall is not None:
        out[Kind.CONSUMER_STALL] = consumer_stall(dataset, stalled_since, now,
                                                  objectives.consumer_stall.total_seconds())
    return out


def _duration(seconds: float) -> str:
    """``3m 12s``, ``45s``, ``1h 5m``: for people."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
