"""``GET /v1/pipeline``: the pipeline monitor's latest sample."""

from __future__ import annotations

from fastapi import APIRouter, Response

from archlab.serving.api import models
from archlab.serving.api.deps import ServingDep, json_response
from archlab.serving.api.pipeline import EMPTY_PIPELINE

router = APIRouter(tags=["pipeline"])


@router.get("/v1/pipeline", response_model=models.Pipeline)
async def pipeline(serving: ServingDep) -> Response:
    """Per service and consumer group: lag, events/s and health; per topic: events/s; per lake
    table: its version, last commit, files, rows and bytes. Sampled every LAB_API_PIPELINE_POLL_S."""
    monitor = serving.monitor
    return json_response(monitor.latest if monitor else EMPTY_PIPELINE)
