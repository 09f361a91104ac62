"""``GET /v1/datasets/{dataset}/quality``: rule pass/fail rates and quarantine reasons."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from archlab.serving.api import models
from archlab.serving.api.deps import RangeDep, ServingDep, ViewDep

router = APIRouter(tags=["datasets"])


@router.get("/v1/datasets/{dataset}/quality", response_model=models.Quality,
            responses={404: {"model": models.Problem}})
async def dataset_quality(view: ViewDep, period: RangeDep, serving: ServingDep) -> Response:
    """Pass, fail and warn rates per rule and the most frequent quarantine reasons, by arrival
    time (from the dq and quarantine Delta tables, so up to a flush interval behind)."""
    document = await run_in_threadpool(serving.quality[view.contract.dataset].document, period)
    return Response(orjson.dumps(document), media_type="application/json")
