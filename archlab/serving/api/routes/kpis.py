"""``GET /v1/datasets/{dataset}/kpis``: the headline figures of the newest minute and hour."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from archlab.serving.api import models, queries
from archlab.serving.api.deps import ServingDep, ViewDep
from archlab.serving.api.routes.aggregates import PAGE_CACHE_SIZE

router = APIRouter(tags=["datasets"])


@router.get("/v1/datasets/{dataset}/kpis", response_model=models.Kpis, responses={404: {"model": models.Problem}})
async def dataset_kpis(view: ViewDep, serving: ServingDep) -> Response:
    """Headline figures of the current minute and the last hour, with the change against the
    window before. "Current" is the newest window in the data, not the wall clock, so replayed
    historical data has KPIs too. Grouped aggregates give only figures that combine exactly."""
    key = ("kpis", view.contract.dataset, view.snapshot.version)  # a snapshot never changes: nor do its KPIs
    document = serving.pages.get(key)
    if document is None:
        document = serving.pages[key] = orjson.dumps(await run_in_threadpool(queries.kpis, view))
        while len(serving.pages) > PAGE_CACHE_SIZE:
            serving.pages.popitem(last=False)
    return Response(document, media_type="application/json")
