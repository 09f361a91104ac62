"""The API's own Prometheus figures: request durations, and ``GET /metrics`` to scrape them.

``/metrics`` is a route rather than prometheus_client's mounted ASGI app: a mount answers its bare
path with a redirect to ``/metrics/``, which Prometheus' default ``metrics_path`` does not follow.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import REGISTRY, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Receive, Scope, Send

REQUESTS = Histogram("lab_api_request_seconds", "API request duration", ["route", "method", "status"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Every metric of the process, as text or OpenMetrics (by the ``Accept`` header)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(REGISTRY), media_type=content_type)


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
