"""``GET /v1/datasets/{dataset}/quality``: rule pass/fail rates and quarantine reasons."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from archlab.serving.api import models, queries
from archlab.serving.api.deps import RangeDep, ServingDep, ViewDep

router = APIRouter(tags=["datasets"])


@router.get("/v1/datasets/{dataset}/quality", response_model=models.Quality,
            responses={404: {"model": models.Problem}})
async def dataset_quality(view: ViewDep, period: RangeDep, serving: ServingDep) -> Response:
    """Pass, fail and warn rates per rule and the most frequent quarantine reasons, by arrival
    time (from the dq and quarantine Delta tables, so up to a flush interval behind)."""
    key = (view.contract.dataset, period)
    cached = serving.quality.get(key)
    if cached is None or time.monotonic() - cached[0] > serving.settings.api_lake_refresh_s:
        document = await run_in_threadpool(queries.quality, serving.tables, view.contract.dataset, period)
        cached = serving.quality[key] = (time.monotonic(), orjson.dumps(document))
    return Response(cached[1], media_type="application/json")
