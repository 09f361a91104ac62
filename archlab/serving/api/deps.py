"""The routes' dependencies, each an ``Annotated`` type a route names as a parameter.

Coroutines on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per
dependency per request for work that never blocks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from archlab.contract import Aggregate
from archlab.contract.types import parse_duration
from archlab.serving.api.queries import TimeRange
from archlab.serving.api.serving import Serving
from archlab.serving.api.store import BadAsOf, GoldView, parse_as_of

RESERVED_PARAMS = frozenset({"from", "to", "limit", "cursor", "as_of"})
"""Query parameters of the aggregates endpoints that are not dimension filters."""


def json_response(document: Any, status_code: int = 200) -> Response:
    """A JSON response serialised by orjson (the response models only document the shape)."""
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


def invalid(location: str, name: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the parameter."""
    return RequestValidationError([{"type": "value_error", "loc": (location, name), "msg": message,
                                    "input": value}])


async def get_serving(request: Request) -> Serving:
    return request.app.state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def get_view(dataset: Annotated[str, Path(description="A dataset with a contract")], serving: ServingDep) -> GoldView:
    view = serving.views.get(dataset)
    if view is None:
        raise HTTPException(404, f"unknown dataset {dataset!r} (path parameter dataset); "
                                 f"known: {', '.join(serving.views)}")
    await serving.rebuild_if_due(view)  # what the gold topic brought since the last read
    return view


ViewDep = Annotated[GoldView, Depends(get_view)]


async def get_aggregate(aggregate: Annotated[str, Path(description="An aggregate of the dataset's contract")],
                        view: ViewDep) -> Aggregate:
    try:
        return view.contract.aggregate(aggregate)
    except KeyError:
        known = ", ".join(a.name for a in view.contract.aggregates)
        raise HTTPException(404, f"unknown aggregate {aggregate!r} of dataset {view.contract.dataset!r} "
                                 f"(path parameter aggregate); known: {known}") from None


AggregateDep = Annotated[Aggregate, Depends(get_aggregate)]


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def get_range(
    start: Annotated[datetime | None, Query(alias="from", description="Inclusive lower bound (ISO-8601; UTC if no offset)")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="Exclusive upper bound (ISO-8601; UTC if no offset)")] = None,
) -> TimeRange:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start > end:
        raise invalid("query", "from", f"from ({start.isoformat()}) is after to ({end.isoformat()})", str(start))
    return TimeRange(start, end)


RangeDep = Annotated[TimeRange, Depends(get_range)]


async def get_filters(request: Request, aggregate: AggregateDep) -> dict[str, str]:
    """Dimension filters: every other query parameter must be a dimension of the aggregate."""
    filters = {}
    for name, value in request.query_params.multi_items():
        if name in RESERVED_PARAMS:
            continue
        if name not in aggregate.group_by:
            dims = ", ".join(aggregate.group_by) or "none"
            raise invalid("query", name, f"unknown dimension {name!r} of aggregate {aggregate.name!r} "
                                         f"(its dimensions: {dims})", value)
        if name in filters:
            raise invalid("query", name, f"dimension {name!r} given more than once", value)
        filters[name] = value
    return filters


FiltersDep = Annotated[dict[str, str], Depends(get_filters)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Windows per page")]
Cursor = Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")]


async def get_as_of(
    as_of: Annotated[str | None, Query(max_length=64, description=(
        "Read the gold table as it was: a table version (0, 1, …) or an ISO-8601 timestamp (UTC if no offset; "
        "the newest version committed by then). Without it: the current values, the gold topic's newest "
        "updates included"))] = None,
) -> int | datetime | None:
    if as_of is None:
        return None
    try:
        return parse_as_of(as_of)
    except BadAsOf as exc:
        raise invalid("query", "as_of", str(exc), as_of) from None


AsOf = Annotated[int | datetime | None, Depends(get_as_of)]


async def get_dataset_filter(
    serving: ServingDep,
    dataset: Annotated[str | None, Query(max_length=200, description="Only this dataset's (all datasets if absent)")] = None,
) -> str | None:
    if dataset is not None and dataset not in serving.contracts:
        raise invalid("query", "dataset", f"unknown dataset {dataset!r}; known: {', '.join(serving.contracts)}", dataset)
    return dataset


DatasetFilter = Annotated[str | None, Depends(get_dataset_filter)]


MAX_RECENT = timedelta(days=366)


async def get_recent(
    recent: Annotated[str, Query(max_length=16, description=(
        "How long resolved alerts stay listed after they resolved: 90s, 15m, 24h, 7d (at most 366d)"))] = "24h",
) -> timedelta:
    try:
        window = parse_duration(recent)
    except (ValueError, OverflowError) as exc:
        raise invalid("query", "recent", str(exc), recent) from None
    if not isinstance(window, timedelta) or window > MAX_RECENT:
        raise invalid("query", "recent", f"{recent!r} is not a duration of at most {MAX_RECENT.days}d", recent)
    return window


Recent = Annotated[timedelta, Depends(get_recent)]
