"""The alert record: the one wire format between the observer, which writes ``<dataset>.alerts``, and its
readers (the API, the dashboard through the API, the alerts lake table, the webhook).

It lives in ``core`` because writers and readers sit in packages that may not import each other. The
topic is compacted and keyed by ``alert_id``, so it holds one current state per alert: a record with
``state == "open"`` and later, under the same key, the same alert with ``state == "resolved"``. An
alert id names one breach (dataset, objective and the moment the breach began), so writing the same
state again after a restart changes nothing a reader can see.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict


class AlertState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Alert(BaseModel):
    """One alert's current state, as the observer last wrote it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: str  # "<dataset>/<objective>/<breach start, epoch ms>": the record's Kafka key
    dataset: str
    objective: str  # an objective of the dataset's contract, e.g. "freshness", "quarantine_rate"
    state: AlertState
    opened_at: AwareDatetime
    resolved_at: AwareDatetime | None = None
    updated_at: AwareDatetime  # when the observer wrote this state
    value: float  # the measured value that opened the alert, or, once resolved, that resolved it
    threshold: float
    unit: str  # of value and threshold, e.g. "s", "ratio", "events/min"
    message: str  # one sentence for people, e.g. "orders: no event for 3m 12s (objective 2m)"

    @property
    def key(self) -> bytes:
        return self.alert_id.encode()

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Alert:
        """Parse one record's value; a pydantic ValidationError says which field is wrong."""
        return cls.model_validate_json(payload)


def alert_id(dataset: str, objective: str, breach_started: datetime) -> str:
    """The id of one breach: the same breach gets the same id after any restart of the observer."""
    return f"{dataset}/{objective}/{int(breach_started.timestamp() * 1000)}"
