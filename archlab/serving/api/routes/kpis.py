"""``GET /v1/datasets/{dataset}/kpis``: the headline figures of the newest minute and hour."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from archlab.serving.api import models, queries
from archlab.serving.api.deps import ViewDep, json_response

router = APIRouter(tags=["datasets"])


@router.get("/v1/datasets/{dataset}/kpis", response_model=models.Kpis, responses={404: {"model": models.Problem}})
async def dataset_kpis(view: ViewDep) -> Response:
    """Headline figures of the current minute and the last hour, with the change against the
    window before. "Current" is the newest window in the data, not the wall clock, so replayed
    historical data has KPIs too. Grouped aggregates give only figures that combine exactly."""
    return json_response(await run_in_threadpool(queries.kpis, view))
