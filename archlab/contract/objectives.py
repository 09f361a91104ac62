"""A dataset's objectives: what "healthy" means for it, which the observer watches and alerts on.

Every objective has a default, so a contract without ``objectives:`` is watched sensibly; writing
``off`` (or YAML's ``false``) for one switches it off for that dataset. Durations are written as
everywhere in a contract (``90s``, ``2m``, ``1h``); rates as a fraction (``0.05``) or a percentage
(``5%``). Which time each objective is measured on is said on its field.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from archlab.contract.types import parse_duration

OFF_WORDS = ("off", "none", "disabled")


def _ratio(value: object) -> object:
    """``"5%"`` as 0.05; numbers and other values are left to pydantic."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip().removesuffix("%").strip()
        try:
            return float(number) / 100
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}; write e.g. 5% or 0.05") from None
    return value


def _off_as_none(value: object) -> object:
    """``off`` (YAML 1.1 reads a bare ``off`` as ``false``) switches an objective off."""
    if value is False or (isinstance(value, str) and value.strip().lower() in OFF_WORDS):
        return None
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), Field(gt=timedelta(0))]
Ratio = Annotated[float, BeforeValidator(_ratio), Field(ge=0, le=1)]


class RateObjective(BaseModel):
    """At most ``max`` of the records of the last ``over`` may fail (quarantine, lateness)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: Ratio
    over: Duration


class VolumeObjective(BaseModel):
    """At least ``min_per_minute`` records arrive per minute (arrival time, measured on ``<dataset>.raw``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_per_minute: Annotated[float, Field(gt=0)]


class Objectives(BaseModel):
    """The contract's ``objectives:`` block; each field ``None`` when switched off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    freshness: Annotated[Duration | None, BeforeValidator(_off_as_none)] = timedelta(minutes=2)
    """Longest time without a new record on ``<dataset>.raw`` (arrival time)."""
    quarantine_rate: Annotated[RateObjective | None, BeforeValidator(_off_as_none)] = RateObjective(
        max=0.05, over=timedelta(minutes=10))
    """Share of raw records silver quarantines, over a window of arrival time (the ``dq`` topic)."""
    late_rate: Annotated[RateObjective | None, BeforeValidator(_off_as_none)] = RateObjective(
        max=0.01, over=timedelta(hours=1))
    """Share of events gold finds later than an aggregate's grace period (event time against the
    watermark, as gold decides it), over a window of arrival time; no aggregates: nothing to measure."""
    volume: Annotated[VolumeObjective | None, BeforeValidator(_off_as_none)] = None
    """Fewest records per minute on ``<dataset>.raw``; off by default (no minimum suits every dataset)."""
    consumer_stall: Annotated[Duration | None, BeforeValidator(_off_as_none)] = timedelta(minutes=5)
    """Longest time a pipeline consumer group may have records waiting on the dataset's topics without
    committing progress (wall-clock time of the observer's samples)."""

    def enabled(self) -> list[str]:
        """The names of the objectives switched on, in field order."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]
