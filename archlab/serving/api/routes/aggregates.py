"""``/v1/datasets/{dataset}/aggregates/{aggregate}``: pages of gold windows, and their live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from archlab.serving.api import models, queries
from archlab.serving.api.deps import (
    AggregateDep,
    AsOf,
    Cursor,
    FiltersDep,
    Limit,
    RangeDep,
    ServingDep,
    ViewDep,
    invalid,
)
from archlab.serving.api.live import item_of
from archlab.serving.api.queries import BadCursor
from archlab.serving.api.store import BadAsOf

AGGREGATES_PATH = "/v1/datasets/{dataset}/aggregates/{aggregate}"
PAGE_CACHE_SIZE = 1024
"""Pages kept per application; a page is keyed by the snapshot or table version it read, so a cached page is
never stale."""

router = APIRouter(tags=["datasets"])


@router.get(AGGREGATES_PATH, response_model=models.Windows, responses={404: {"model": models.Problem}})
async def aggregate_windows(
    view: ViewDep, aggregate: AggregateDep, period: RangeDep, filters: FiltersDep, serving: ServingDep,
    as_of: AsOf, limit: Limit = 100, cursor: Cursor = None,
) -> Response:
    """Windows of an aggregate with the latest value per key, ordered by window start then
    dimension values; filter with ``<dimension>=<value>``; page with ``cursor``; ``as_of`` reads an
    older version of the aggregate's gold table (time travel)."""
    if as_of is None:
        table, version, read = view.snapshot.table(aggregate.name), None, ("snapshot", view.snapshot.version)
    else:
        try:
            version, table = await run_in_threadpool(view.as_of, aggregate, as_of)
        except BadAsOf as exc:
            raise invalid("query", "as_of", str(exc), str(as_of)) from None
        read = ("as_of", version)
    key = (view.contract.dataset, aggregate.name, period, tuple(sorted(filters.items())), limit, cursor, read)
    page = serving.pages.get(key)
    if page is None:
        try:
            document = await run_in_threadpool(queries.windows, view.contract.dataset, aggregate, table, period,
                                               filters, limit, cursor, version)
        except BadCursor as exc:
            raise invalid("query", "cursor", str(exc), cursor) from None
        page = orjson.dumps(document)
        serving.pages[key] = page
        if len(serving.pages) > PAGE_CACHE_SIZE:
            serving.pages.popitem(last=False)
    return Response(page, media_type="application/json")


@router.get(AGGREGATES_PATH + "/stream", responses={
    200: {"content": {"text/event-stream": {}}, "description": "`window` events, one per gold update"},
    404: {"model": models.Problem}})
async def aggregate_stream(view: ViewDep, aggregate: AggregateDep, filters: FiltersDep,
                           serving: ServingDep) -> EventSourceResponse:
    """Server-Sent Events: a `ready` event once subscribed, then a `window` event (the same shape
    as an item of the aggregates endpoint) for each update read from the gold topic."""
    subscription = serving.hub.subscribe(view.contract.dataset, aggregate.name)
    measures = [m.name for m in aggregate.measures]

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "ready", "data": "{}"}
            async for row in subscription.updates():
                if all(str(row.get(d)) == v for d, v in filters.items()):
                    item = item_of(row, aggregate.group_by, measures)
                    yield {"event": "window", "id": str(row.get("revision")), "data": orjson.dumps(item).decode()}
        finally:
            subscription.close()

    return EventSourceResponse(events(), ping=15)
