"""``/v1/alerts``: the observer's alerts, open and recently resolved, and their live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from sse_starlette import EventSourceResponse

from archlab.core.alerts import AlertState
from archlab.serving.api import models
from archlab.serving.api.alerts import EVERY_ALERT, document
from archlab.serving.api.deps import DatasetFilter, Recent, ServingDep, ViewDep, json_response

router = APIRouter(tags=["alerts"])

StateFilter = Annotated[AlertState | None, Query(description="Only open or only resolved alerts (both if absent)")]


@router.get("/v1/alerts", response_model=models.Alerts, responses={422: {"model": models.Problem}})
async def alerts(serving: ServingDep, dataset: DatasetFilter, recent: Recent, state: StateFilter = None) -> Response:
    """Every open alert, then the alerts resolved within ``recent``, each newest first (by opening,
    resp. resolution): the current state of each alert id on the datasets' alerts topics."""
    chosen = serving.alerts.select(dataset, state, datetime.now(UTC) - recent)
    return json_response(document(chosen))


@router.get("/v1/datasets/{dataset}/alerts", response_model=models.Alerts, tags=["datasets"],
            responses={404: {"model": models.Problem}})
async def dataset_alerts(view: ViewDep, serving: ServingDep, recent: Recent, state: StateFilter = None) -> Response:
    """``/v1/alerts?dataset=`` under the dataset's path."""
    chosen = serving.alerts.select(view.contract.dataset, state, datetime.now(UTC) - recent)
    return json_response(document(chosen))


@router.get("/v1/alerts/stream", responses={
    200: {"content": {"text/event-stream": {}}, "description": "`ready`, then one `alert` event per change"},
    422: {"model": models.Problem}})
async def alert_stream(serving: ServingDep, dataset: DatasetFilter, recent: Recent) -> EventSourceResponse:
    """Server-Sent Events: `ready` with what ``GET /v1/alerts`` answers now, then an `alert` event (one
    alert, as listed there) each time an alert opens or resolves."""
    subscription = serving.alerts.hub.subscribe(*EVERY_ALERT)
    current = document(serving.alerts.select(dataset, None, datetime.now(UTC) - recent))

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            yield {"event": "ready", "data": orjson.dumps(current).decode()}
            async for alert in subscription.updates():
                if dataset is None or alert["dataset"] == dataset:
                    yield {"event": "alert", "id": f"{alert['alert_id']}@{alert['updated_at']}",
                           "data": orjson.dumps(alert).decode()}
        finally:
            subscription.close()

    return EventSourceResponse(events(), ping=15)
