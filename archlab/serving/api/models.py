"""Response schemas, for the OpenAPI document and its clients. Handlers return JSON bytes built by
orjson (the hot path skips pydantic); the test suite checks every response against these with
schemathesis. Timestamps are ISO-8601 UTC strings with ``Z``; decimal figures are exact strings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from archlab.core.alerts import Alert

Value = int | float | str | bool | None


class Problem(BaseModel):
    """An error; ``detail`` names the parameter at fault."""

    detail: str | list[dict[str, object]]


class MeasureInfo(BaseModel):
    name: str
    fn: str
    description: str
    type: str | None = Field(description="The figure's contract type: int, float or decimal(p,s)")
    unit: str | None = Field(description="What the figure counts in, from the contract (an ISO 4217 code is money)")


class AggregateInfo(BaseModel):
    name: str
    description: str
    window_seconds: float
    grace_seconds: float
    dimensions: list[str]
    measures: list[MeasureInfo]


class DatasetInfo(BaseModel):
    name: str
    description: str
    contract_version: int
    aggregates: list[AggregateInfo]


class Datasets(BaseModel):
    datasets: list[DatasetInfo]


class Window(BaseModel):
    window_start: str
    window_end: str
    dimensions: dict[str, Value]
    measures: dict[str, Value]
    events: int | None
    late_events: int | None
    final: bool | None
    revision: int | None
    watermark: str | None


class Windows(BaseModel):
    dataset: str
    aggregate: str
    dimensions: list[str]
    measures: list[str]
    as_of_version: int | None = Field(description="The gold table version read when as_of was given; null for the "
                                                  "current values")
    items: list[Window]
    next_cursor: str | None


class Figure(BaseModel):
    name: str
    value: Value
    previous: Value
    change: Value
    change_pct: float | None


class CompleteWindow(BaseModel):
    """The newest complete window (final, or followed by a newer one) against the window before it."""

    window_start: str
    window_end: str
    previous_window_start: str | None
    figures: list[Figure]


class Period(BaseModel):
    period: Literal["minute", "hour"]
    aggregate: str
    window_start: str | None
    window_end: str | None
    previous_window_start: str | None
    final: bool | None
    figures: list[Figure] = Field(description="The newest window, which may have just opened, against the one before")
    complete: CompleteWindow | None = Field(description="Like with like: the newest complete window against the "
                                                        "one before; null until there is one")


class Kpis(BaseModel):
    dataset: str
    periods: list[Period]


class RuleQuality(BaseModel):
    rule: str
    passed: int
    failed: int
    warned: int
    pass_rate: float | None
    fail_rate: float | None
    warn_rate: float | None


class Reason(BaseModel):
    check: str
    field: str | None
    records: int


class Quality(BaseModel):
    dataset: str
    records: int
    quarantined: int
    quarantine_rate: float | None
    rules: list[RuleQuality]
    top_reasons: list[Reason]


class TopicLag(BaseModel):
    topic: str
    layer: str
    committed: int
    lag: int
    events_per_s: float | None


class GroupHealth(BaseModel):
    group: str
    lag: int
    events_per_s: float | None
    health: str
    topics: list[TopicLag]


class ServiceHealth(BaseModel):
    service: str
    health: str
    groups: list[GroupHealth]


class TopicRate(BaseModel):
    topic: str
    dataset: str
    layer: str
    end_offset: int
    events_per_s: float | None


class LakeTable(BaseModel):
    """One Delta table, from its log: null version and commit before its first commit."""

    dataset: str
    layer: str
    table: str
    version: int | None
    last_commit: str | None
    files: int
    rows: int
    bytes: int


class Pipeline(BaseModel):
    sampled_at: str | None
    health: str
    services: list[ServiceHealth]
    topics: list[TopicRate]
    lake: list[LakeTable]


class LakeTables(BaseModel):
    sampled_at: str | None
    tables: list[LakeTable]


class Commit(BaseModel):
    """One commit of a Delta table, from its log."""

    version: int | None
    timestamp: str | None
    operation: str
    parameters: dict[str, str]
    metrics: dict[str, int | float]


class TableHistory(BaseModel):
    table: str
    commits: list[Commit]


class Alerts(BaseModel):
    """Open alerts first, then the recently resolved ones, each newest first (the observer's records)."""

    open: int = Field(description="How many of the listed alerts are open")
    alerts: list[Alert]


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = {}
