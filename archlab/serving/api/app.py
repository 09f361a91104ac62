"""The FastAPI application factory: the routers (one per resource, in ``routes``), the metrics, the
OpenAPI document completed from the contracts, and the background jobs for the app's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from archlab.contract import Contract
from archlab.serving.api import metrics
from archlab.serving.api.routes import api_router
from archlab.serving.api.routes.aggregates import AGGREGATES_PATH
from archlab.serving.api.serving import Serving, start_background
from archlab.serving.api.settings import ApiSettings


def create_app(settings: ApiSettings, *, background: bool = True) -> FastAPI:
    """The API over ``settings.datasets``; ``background=False`` skips the refresh jobs (unit use)."""
    serving = Serving.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = start_background(serving) if background else []
        try:
            yield
        finally:
            serving.close_streams()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="Architecture Lab API", version="1.0.0", lifespan=lifespan,
                  description="Gold aggregates, KPIs, data quality and pipeline health of the lakehouse. "
                              "Timestamps are ISO-8601 UTC; decimal figures are exact strings.")
    app.state.serving = serving
    app.include_router(api_router)
    app.include_router(metrics.router)
    app.openapi = lambda: _openapi(app, serving.contracts)  # type: ignore[method-assign]
    app.add_middleware(metrics.MetricsMiddleware)
    return app


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
