"""The quality figures of a dataset (``GET /v1/datasets/{dataset}/quality``), at a cost bounded by the
period asked, not by the history the lake holds.

The dq and quarantine tables are partitioned by arrival date (``dt``). A period is answered day by
day: a day the period covers whole is summed once and kept, keyed by the data files of its partition
(a partition whose files changed, by a new flush or a compaction, is summed anew, and only that one);
a day the period cuts is read with the period's bounds pushed down to the files (partition and min/max
statistics), so only the period's rows are read. Whole answers are kept per period and table versions,
so a request between two commits costs a dictionary look-up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any

import pyarrow as pa
import structlog
from deltalake import DeltaTable
from prometheus_client import Counter as Total

from archlab.core import names, sql
from archlab.lake.tables import Tables
from archlab.serving.api.queries import TimeRange, range_filter, where_clause

log = structlog.get_logger("api.quality")

FILES_READ = Total("lab_api_quality_files_read_total", "Data files of dq and quarantine tables read", ["dataset"])

DAYS_KEPT = 800
"""Whole-day sums kept per table (a few numbers each): more than two years of history."""
ANSWERS_KEPT = 64
"""Whole answers kept per dataset (distinct periods asked since the last commit)."""

ReasonKey = tuple[str, str | None]


@dataclass
class DaySums:
    """What a day (or the part of it inside a period) adds to the figures."""

    rules: dict[str, list[int]] = field(default_factory=dict)  # rule -> [passed, failed, warned, records]
    quarantined: int = 0
    reasons: Counter[ReasonKey] = field(default_factory=Counter)

    def add(self, other: DaySums) -> None:
        for rule, sums in other.rules.items():
            held = self.rules.setdefault(rule, [0, 0, 0, 0])
            for i, value in enumerate(sums):
                held[i] += value
        self.quarantined += other.quarantined
        self.reasons.update(other.reasons)


Summarise = Callable[[Any, list[str], list[Any]], dict[date, DaySums]]
"""Sums a table's rows (an Arrow dataset, a WHERE clause's parts and parameters) per arrival day."""


class _Table:
    """One of the dataset's quality tables: its handle, and the whole-day sums read from it."""

    def __init__(self, tables: Tables, dataset: str, path: str, time_column: str) -> None:
        self._tables = tables
        self._dataset_name = dataset
        self.path = path
        self.time_column = time_column
        self._delta: DeltaTable | None = None
        self._days: OrderedDict[tuple[date, tuple[str, ...]], DaySums] = OrderedDict()
        self.version: int | None = None
        self.partitions: dict[date, tuple[str, ...]] = {}

    def refresh(self) -> None:
        """Move to the table's latest version (its log only); note its files per day when it changed."""
        if self._delta is None:
            self._delta = self._tables.open(self.path)
            if self._delta is None:
                return
        else:
            self._delta.update_incremental()
        version = self._delta.version()
        if version == self.version:
            return
        actions = pa.table(self._delta.get_add_actions(flatten=True))
        by_day: dict[date, list[str]] = {}
        if actions.num_rows:
            for path, day in zip(actions.column("path").to_pylist(),
                                 actions.column(f"partition.{names.DATE_PARTITION}").to_pylist(), strict=True):
                by_day.setdefault(day, []).append(path)
        self.partitions = {day: tuple(sorted(paths)) for day, paths in by_day.items()}
        self.version = version

    def sums(self, period: TimeRange, summarise: Summarise) -> DaySums:
        """The figures of ``period``: whole days from the kept sums, cut days read with the period's bounds.
        The days not kept yet are read in one scan (their files fetched concurrently), not one by one: a
        first whole-history answer reads every file of the tables."""
        total = DaySums()
        if self._delta is None:
            return total
        whole: list[tuple[date, tuple[str, ...]]] = []
        cut: list[date] = []
        for day, files in sorted(self.partitions.items()):
            start = datetime.combine(day, clock.min, UTC)
            end = start + timedelta(days=1) if day < date.max else datetime.max.replace(tzinfo=UTC)
            if (period.end is not None and period.end <= start) or (period.start is not None and period.start >= end):
                continue
            covered = (period.start is None or period.start <= start) and (period.end is None or period.end >= end)
            if covered and _inside_calendar(day):
                whole.append((day, files))
            else:
                cut.append(day)
        kept = {key: self._days[key] for key in whole if key in self._days}
        missing = [day for day, files in whole if (day, files) not in kept]
        if missing:
            read = summarise(self._dataset(missing, None), [], [])
            for key in whole:
                if key not in kept:
                    kept[key] = self._days[key] = read.get(key[0], DaySums())
                    self._forget_older(*key)
        for key in whole:
            total.add(kept[key])
        if cut:
            where, params = range_filter(self.time_column, period)
            for sums in summarise(self._dataset(cut, period), where, params).values():
                total.add(sums)
        return total

    def _dataset(self, days: list[date], period: TimeRange | None) -> Any:
        """The days' files (those whose statistics may hold the period's rows) as an Arrow dataset."""
        assert self._delta is not None
        listed = ", ".join(f"'{day.isoformat()}'" for day in days)
        predicate = f"{names.DATE_PARTITION} IN ({listed})"
        if period is not None and period.start is not None:
            predicate += f" AND {self.time_column} >= '{period.start.isoformat()}'"
        if period is not None and period.end is not None:
            predicate += f" AND {self.time_column} < '{period.end.isoformat()}'"
        dataset = self._delta.to_pyarrow_dataset(file_pruning_predicate=predicate)
        FILES_READ.labels(self._dataset_name).inc(len(dataset.files))
        return dataset

    def _forget_older(self, day: date, files: tuple[str, ...]) -> None:
        for stale in [k for k in self._days if k[0] == day and k[1] != files]:
            del self._days[stale]
        while len(self._days) > DAYS_KEPT:
            self._days.popitem(last=False)


def _inside_calendar(day: date) -> bool:
    """The first and last days of the calendar also hold the stamps clamped into them: never summed whole."""
    return date.min < day < date.max


def _dq_sums(dataset: Any, where: list[str], params: list[Any]) -> dict[date, DaySums]:
    con = sql.connect()
    try:
        con.register("dq", dataset)
        rows = con.execute(f"SELECT {names.DATE_PARTITION}, rule, sum(passed), sum(failed), sum(warned), sum(records) "
                           f"FROM dq {where_clause(where)} GROUP BY ALL", params).fetchall()
    finally:
        con.close()
    by_day: dict[date, DaySums] = {}
    for day, rule, passed, failed, warned, records in rows:
        by_day.setdefault(day, DaySums()).rules[rule] = [int(passed), int(failed), int(warned), int(records)]
    return by_day


def _quarantine_sums(dataset: Any, where: list[str], params: list[Any]) -> dict[date, DaySums]:
    con = sql.connect()
    try:
        con.register("quarantine", dataset)
        counts = con.execute(f"SELECT {names.DATE_PARTITION}, count(*) FROM quarantine {where_clause(where)} "
                             "GROUP BY ALL", params).fetchall()
        reasons = con.execute(f"SELECT {names.DATE_PARTITION}, reason.check, reason.field, count(*) FROM ("
                              f"SELECT {names.DATE_PARTITION}, unnest(reasons) AS reason FROM quarantine "
                              f"{where_clause(where)}) GROUP BY ALL", params).fetchall()
    finally:
        con.close()
    by_day = {day: DaySums(quarantined=int(count)) for day, count in counts}
    for day, check, field_, n in reasons:
        by_day.setdefault(day, DaySums()).reasons[(check, field_)] += int(n)
    return by_day


class QualityFigures:
    """The quality figures of one dataset, kept fresh at most every ``refresh_s`` (its tables' logs)."""

    def __init__(self, tables: Tables, dataset: str, refresh_s: float) -> None:
        self.dataset = dataset
        self._refresh_s = refresh_s
        self._dq = _Table(tables, dataset, names.table_path("dq", dataset), "minute")
        self._quarantine = _Table(tables, dataset, names.table_path("quarantine", dataset),
                                  "kafka_timestamp")
        self._checked_at = float("-inf")
        self._answers: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()  # one reader of the tables at a time: the kept sums are shared
        self.summed = False

    def sum_history(self) -> None:
        """Sum every whole day the tables hold, once (blocking): the API does it at start, so that its first
        answers do not read every file of the history (30 days of hourly files, 1,440: ~3 s)."""
        self.document(TimeRange(None, None))
        self.summed = True

    def document(self, period: TimeRange, top: int = 10) -> dict[str, Any]:
        """The endpoint's answer for ``period`` (blocking: call it from a worker thread)."""
        with self._lock:
            if time.monotonic() - self._checked_at >= self._refresh_s:
                self._dq.refresh()
                self._quarantine.refresh()
                self._checked_at = time.monotonic()
            key = (period, top, self._dq.version, self._quarantine.version)
            answer = self._answers.get(key)
            if answer is None:
                answer = self._answers[key] = self._compute(period, top)
                while len(self._answers) > ANSWERS_KEPT:
                    self._answers.popitem(last=False)
            return answer

    def _compute(self, period: TimeRange, top: int) -> dict[str, Any]:
        dq = self._dq.sums(period, _dq_sums)
        quarantine = self._quarantine.sums(period, _quarantine_sums)
        rules = []
        records = 0
        for rule, (passed, failed, warned, rule_records) in sorted(dq.rules.items()):
            checked = passed + failed + warned
            rules.append({"rule": rule, "passed": passed, "failed": failed, "warned": warned,
                          "pass_rate": _rate(passed, checked), "fail_rate": _rate(failed, checked),
                          "warn_rate": _rate(warned, checked)})
            if rule == "duplicates":  # a row per refined batch: its records are every raw record once
                records = rule_records
        ordered = sorted(quarantine.reasons.items(),
                         key=lambda item: (-item[1], item[0][0], item[0][1] is not None, item[0][1] or ""))
        return {"dataset": self.dataset, "records": records, "quarantined": quarantine.quarantined,
                "quarantine_rate": _rate(quarantine.quarantined, records), "rules": rules,
                "top_reasons": [{"check": check, "field": field_, "records": n} for (check, field_), n in ordered[:top]]}


def _rate(part: int | float, whole: int | float) -> float | None:
    return round(part / whole, 6) if whole else None
