"""The FastAPI application: routes, their dependencies, and the background tasks that keep the
served state fresh (gold topic follower, lake refresh, snapshot rebuild, pipeline sampling)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import structlog
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import Histogram, make_asgi_app
from sse_starlette import EventSourceResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from archlab.contract import Aggregate, Contract, load_contracts
from archlab.lake.store import Lake
from archlab.serving.api import models, queries
from archlab.serving.api.live import GoldFollower, Hub, item_of
from archlab.serving.api.pipeline import EMPTY_PIPELINE, PipelineMonitor
from archlab.serving.api.queries import BadCursor, TimeRange
from archlab.serving.api.settings import ApiSettings
from archlab.serving.api.store import GoldView

log = structlog.get_logger("api")

REQUESTS = Histogram("lab_api_request_seconds", "API request duration", ["route", "method", "status"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
SNAPSHOT_TICK_S = 0.25
"""How often topic updates are merged into the served snapshot (bounds their extra delay)."""
PAGE_CACHE_SIZE = 1024
AGGREGATES_PATH = "/v1/datasets/{dataset}/aggregates/{aggregate}"
RESERVED_PARAMS = frozenset({"from", "to", "limit", "cursor"})


@dataclass
class Serving:
    """Everything the routes read, built once per application."""

    settings: ApiSettings
    contracts: dict[str, Contract]
    lake: Lake
    views: dict[str, GoldView]
    hub: Hub = field(default_factory=Hub)
    pages: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)
    quality: dict[tuple[Any, ...], tuple[float, bytes]] = field(default_factory=dict)
    follower: GoldFollower | None = None
    monitor: PipelineMonitor | None = None


def json_response(document: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


# ------------------------------------------------------------------------------------------ dependencies
# Coroutines on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
# per dependency per request for work that never blocks.
async def get_serving(request: Request) -> Serving:
    return request.app.state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def get_view(dataset: Annotated[str, Path(description="A dataset with a contract")], serving: ServingDep) -> GoldView:
    view = serving.views.get(dataset)
    if view is None:
        raise HTTPException(404, f"unknown dataset {dataset!r} (path parameter dataset); "
                                 f"known: {', '.join(serving.views)}")
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


def _invalid(location: str, name: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the parameter."""
    return RequestValidationError([{"type": "value_error", "loc": (location, name), "msg": message,
                                    "input": value}])


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
        raise _invalid("query", "from", f"from ({start.isoformat()}) is after to ({end.isoformat()})", str(start))
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
            raise _invalid("query", name, f"unknown dimension {name!r} of aggregate {aggregate.name!r} "
                                          f"(its dimensions: {dims})", value)
        if name in filters:
            raise _invalid("query", name, f"dimension {name!r} given more than once", value)
        filters[name] = value
    return filters


FiltersDep = Annotated[dict[str, str], Depends(get_filters)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Windows per page")]
Cursor = Annotated[str | None, Query(max_length=2000, description="next_cursor of the previous page")]


# ------------------------------------------------------------------------------------------ routes
def create_app(settings: ApiSettings, *, background: bool = True) -> FastAPI:
    """The API over ``settings.datasets``; ``background=False`` skips the refresh tasks (unit use)."""
    contracts = load_contracts(settings.contracts_dir, settings.datasets)
    lake = Lake.from_settings(settings)
    serving = Serving(settings, contracts, lake, {name: GoldView(c, lake) for name, c in contracts.items()})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.serving = serving
        tasks = _start_background(serving) if background else []
        try:
            yield
        finally:
            serving.hub.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="Architecture Lab API", version="1.0.0", lifespan=lifespan,
                  description="Gold aggregates, KPIs, data quality and pipeline health of the lakehouse. "
                              "Timestamps are ISO-8601 UTC; decimal figures are exact strings.")
    app.state.serving = serving

    @app.get("/v1/datasets", response_model=models.Datasets, tags=["datasets"])
    async def list_datasets(serving: ServingDep) -> Response:
        """Every served dataset with its aggregates, their dimensions and measures (from the contracts)."""
        return json_response({"datasets": [_describe(c) for c in serving.contracts.values()]})

    @app.get(AGGREGATES_PATH, response_model=models.Windows, tags=["datasets"],
             responses={404: {"model": models.Problem}})
    async def aggregate_windows(
        view: ViewDep, aggregate: AggregateDep, period: RangeDep, filters: FiltersDep, serving: ServingDep,
        limit: Limit = 100, cursor: Cursor = None,
    ) -> Response:
        """Windows of an aggregate with the latest value per key, ordered by window start then
        dimension values; filter with ``<dimension>=<value>``; page with ``cursor``."""
        snapshot = view.snapshot.version
        key = (view.contract.dataset, aggregate.name, period, tuple(sorted(filters.items())), limit, cursor, snapshot)
        page = serving.pages.get(key)
        if page is None:
            try:
                document = await run_in_threadpool(queries.windows, view, aggregate, period, filters, limit, cursor)
            except BadCursor as exc:
                raise _invalid("query", "cursor", str(exc), cursor) from None
            page = orjson.dumps(document)
            serving.pages[key] = page
            if len(serving.pages) > PAGE_CACHE_SIZE:
                serving.pages.popitem(last=False)
        return Response(page, media_type="application/json")

    @app.get(AGGREGATES_PATH + "/stream", tags=["datasets"], responses={
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

    @app.get("/v1/datasets/{dataset}/kpis", response_model=models.Kpis, tags=["datasets"],
             responses={404: {"model": models.Problem}})
    async def dataset_kpis(view: ViewDep) -> Response:
        """Headline figures of the current minute and the last hour, with the change against the
        window before. "Current" is the newest window in the data, not the wall clock, so replayed
        historical data has KPIs too. Grouped aggregates give only figures that combine exactly."""
        return json_response(await run_in_threadpool(queries.kpis, view))

    @app.get("/v1/datasets/{dataset}/quality", response_model=models.Quality, tags=["datasets"],
             responses={404: {"model": models.Problem}})
    async def dataset_quality(view: ViewDep, period: RangeDep, serving: ServingDep) -> Response:
        """Pass, fail and warn rates per rule and the most frequent quarantine reasons, by arrival
        time (from the dq and quarantine lake tables, so up to a flush interval behind)."""
        key = (view.contract.dataset, period)
        cached = serving.quality.get(key)
        if cached is None or time.monotonic() - cached[0] > serving.settings.api_lake_refresh_s:
            document = await run_in_threadpool(queries.quality, serving.lake, view.contract.dataset, period)
            cached = serving.quality[key] = (time.monotonic(), orjson.dumps(document))
        return Response(cached[1], media_type="application/json")

    @app.get("/v1/pipeline", response_model=models.Pipeline, tags=["pipeline"])
    async def pipeline(serving: ServingDep) -> Response:
        """Per service and consumer group: lag, events/s and health; per topic: events/s; per lake
        layer: the newest object. Sampled every LAB_API_PIPELINE_POLL_S."""
        monitor = serving.monitor
        return json_response(monitor.latest if monitor else EMPTY_PIPELINE)

    @app.get("/healthz", response_model=models.Health, tags=["health"])
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok", "checks": {}})

    @app.get("/readyz", response_model=models.Health, tags=["health"],
             responses={503: {"model": models.Health}})
    async def readyz(serving: ServingDep) -> Response:
        """Readiness: the gold topics are followed and every dataset's lake was read once."""
        checks = {"gold_topic": bool(serving.follower and serving.follower.ready.is_set())}
        checks |= {f"lake:{name}": view.lake_loaded for name, view in serving.views.items()}
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "starting", "checks": checks}, 200 if ready else 503)

    app.mount("/metrics", make_asgi_app())
    app.openapi = lambda: _openapi(app, contracts)  # type: ignore[method-assign]
    app.add_middleware(MetricsMiddleware)
    return app


def _describe(contract: Contract) -> dict[str, Any]:
    return {
        "name": contract.dataset, "description": contract.description, "contract_version": contract.version,
        "aggregates": [{
            "name": a.name, "description": a.description, "window_seconds": a.window.total_seconds(),
            "grace_seconds": a.grace.total_seconds(), "dimensions": list(a.group_by),
            "measures": [{"name": m.name, "fn": m.fn, "description": m.description} for m in a.measures],
        } for a in contract.aggregates],
    }


def _openapi(app: FastAPI, contracts: dict[str, Contract]) -> dict[str, Any]:
    """FastAPI's document, plus what only the contracts know: the dataset and aggregate names, and
    the dimension filters of the aggregates endpoints."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    aggregates = sorted({a.name for c in contracts.values() for a in c.aggregates})
    dimensions = sorted({d for c in contracts.values() for a in c.aggregates for d in a.group_by})
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "dataset":
                    parameter["schema"]["enum"] = list(contracts)
                if parameter["in"] == "path" and parameter["name"] == "aggregate":
                    parameter["schema"]["enum"] = aggregates
            if path.startswith(AGGREGATES_PATH):
                operation.setdefault("parameters", []).extend({
                    "name": name, "in": "query", "required": False, "schema": {"type": "string"},
                    "description": "Keep windows with this dimension value (422 if the aggregate has no such dimension)",
                } for name in dimensions)
    app.openapi_schema = schema
    return schema


def _start_background(serving: Serving) -> list[asyncio.Task[None]]:
    settings = serving.settings
    serving.follower = GoldFollower(settings, serving.views, serving.hub)
    serving.monitor = PipelineMonitor(settings, serving.lake)

    async def refresh_lake() -> None:
        while True:
            for view in serving.views.values():
                await asyncio.to_thread(view.refresh_lake)
            await asyncio.sleep(settings.api_lake_refresh_s)

    async def rebuild_snapshots() -> None:
        while True:
            for view in serving.views.values():
                view.expire_live(settings.api_live_ttl_s)
                await asyncio.to_thread(view.rebuild)
            await asyncio.sleep(SNAPSHOT_TICK_S)

    jobs: dict[str, Callable[[], Awaitable[None]]] = {
        "gold follower": serving.follower.run, "lake refresh": refresh_lake,
        "snapshot rebuild": rebuild_snapshots, "pipeline monitor": serving.monitor.run,
    }
    return [asyncio.create_task(_keep_running(name, job)) for name, job in jobs.items()]


async def _keep_running(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run a background job forever: a failure (broker or S3 away) is logged and retried with backoff."""
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("background job failed, retrying", job=name, error=repr(exc), retry_in_s=delay)
        if time.monotonic() - started > 60:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


class MetricsMiddleware:
    """Request durations by route template, method and status (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUESTS.labels(template, scope["method"], str(status[0])).observe(time.perf_counter() - started)

