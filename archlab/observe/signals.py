"""The observer's inputs, parsed and folded into the state its faust tables keep.

Two streams feed it. ``<dataset>.dq`` holds silver_refiner's quality counts, one record per batch and
check (``{"dataset", "minute", "rule", "passed", "failed", "warned", "records"}``), and gold's
lateness counts per batch and aggregate under the rule ``late_beyond_grace.<aggregate>``. The
observer's own sampler writes ``<dataset>.health``: the raw topic's end offset and, per watched
consumer group, its committed offsets and whether records wait for it.

Of the dq rows, two carry what the rates need: the ``duplicates`` row counts the batch's raw records
(``records``) and its valid ones (``passed`` unique + ``failed`` duplicates), so the quarantined
records are ``records - passed - failed``; each lateness row counts on-time (``passed``) and too-late
(``failed``) events. The other rules' rows are per check (a row failing three checks counts three
times) and are not needed. These rule names are written by archlab.pipeline (silver's stage and gold's
stages), which this package may not import.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from archlab.observe.evaluate import Buckets, add_to_window

DUPLICATES_RULE = "duplicates"
LATENESS_RULE_PREFIX = "late_beyond_grace."
HEALTH_HORIZON_S = 120.0
"""How much of the raw topic's end-offset history a dataset's health state keeps (volume needs 60 s)."""


class DqRow(BaseModel):
    """One record of ``<dataset>.dq``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dataset: str
    rule: str
    passed: NonNegativeInt
    failed: NonNegativeInt
    warned: NonNegativeInt = 0
    records: NonNegativeInt


class GroupSample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    committed: int  # sum of the group's committed offsets on the dataset's topics
    waiting: bool  # records wait for it (lag beyond the commit-marker slack)


class HealthSample(BaseModel):
    """One record of ``<dataset>.health``, written by the observer's sampler."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    at: float  # epoch seconds of the sample
    raw_end: int  # sum of the raw topic's end offsets
    groups: dict[str, GroupSample]


class BadRecord(ValueError):
    """A record the observer skips; ``reason`` labels the skip counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def carries_rates(key: bytes | None) -> bool:
    """Whether a dq record, by its key (the rule: silver and gold key dq records by it), counts for a
    rate; the others (per-check rows, about 45 of every 49 records for orders) are not even parsed.
    A record without a key is parsed, so a malformed one is counted."""
    return key is None or key == DUPLICATES_RULE.encode() or key.startswith(LATENESS_RULE_PREFIX.encode())


def parse_dq(value: bytes | None) -> DqRow:
    """A dq record's value, or :class:`BadRecord` saying why it cannot be used."""
    if not value:
        raise BadRecord("empty", "no value")
    try:
        row = DqRow.model_validate_json(value)
    except ValidationError as exc:
        reason = "not_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "bad_fields"
        raise BadRecord(reason, str(exc)) from None
    if row.rule == DUPLICATES_RULE and row.passed + row.failed > row.records:
        raise BadRecord("bad_counts", f"{row.passed} + {row.failed} valid records of {row.records}")
    return row


def fold_dq(quality: dict[str, Buckets] | None, row: DqRow, at: float, quarantine_over_s: float,
            late_over_s: float) -> dict[str, Buckets] | None:
    """One partition's rate windows with a dq row added at arrival time ``at``; None when the row
    carries nothing the rates use (the state is then left as it is)."""
    state = quality or {"quarantine": [], "late": []}
    if row.rule == DUPLICATES_RULE:
        quarantined = row.records - row.passed - row.failed
        return {**state, "quarantine": add_to_window(state["quarantine"], at, quarantined, row.records,
                                                     quarantine_over_s)}
    if row.rule.startswith(LATENESS_RULE_PREFIX):
        return {**state, "late": add_to_window(state["late"], at, row.failed, row.passed + row.failed, late_over_s)}
    return None


def fold_health(state: dict | None, sample: HealthSample) -> dict | None:
    """A dataset's health state with a new sample folded in; None for a sample not newer than the
    state's (a replay after a restart must not move time backwards).

    The state: ``at`` (newest sample), ``raw_end``, ``last_arrival`` (when raw last grew; the first
    sample's time when the observer has never seen the dataset), ``ends`` (``[at, raw_end]`` pairs of
    the last two minutes) and per group ``committed`` and ``progress_at`` (when it last committed
    progress or had nothing waiting)."""
    if state is not None and sample.at <= state["at"]:
        return None
    grew = state is None or sample.raw_end > state["raw_end"]
    groups = {}
    for name, group in sample.groups.items():
        before = (state or {}).get("groups", {}).get(name)
        moved = before is None or not group.waiting or group.committed > before["committed"]
        groups[name] = {"committed": group.committed, "waiting": group.waiting,
                        "progress_at": sample.at if moved else before["progress_at"]}
    ends = [pair for pair in (state or {}).get("ends", []) if pair[0] >= sample.at - HEALTH_HORIZON_S]
    return {
        "at": sample.at,
        "raw_end": max(sample.raw_end, (state or {}).get("raw_end", 0)),
        "last_arrival": sample.at if grew else state["last_arrival"],
        "ends": [*ends, [sample.at, sample.raw_end]],
        "groups": groups,
    }


def stalled_since(health: dict) -> dict[str, float]:
    """Per group with records waiting: since when it has made no progress."""
    return {name: group["progress_at"] for name, group in health["groups"].items() if group["waiting"]}
