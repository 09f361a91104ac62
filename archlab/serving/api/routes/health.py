"""``/healthz`` (liveness) and ``/readyz`` (readiness) for orchestrators and tests."""

from __future__ import annotations

from fastapi import APIRouter, Response

from archlab.serving.api import models
from archlab.serving.api.deps import ServingDep, json_response

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=models.Health)
async def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok", "checks": {}})


@router.get("/readyz", response_model=models.Health, responses={503: {"model": models.Health}})
async def readyz(serving: ServingDep) -> Response:
    """Readiness: the gold topics are followed, the alerts topics read to their end once, every
    dataset's lake was read once and its quality history summed once."""
    checks = {"gold_topic": bool(serving.follower and serving.follower.ready.is_set()),
              "alerts_topic": bool(serving.alert_follower and serving.alert_follower.caught_up.is_set())}
    checks |= {f"lake:{name}": view.lake_loaded for name, view in serving.views.items()}
    checks |= {f"quality:{name}": figures.summed for name, figures in serving.quality.items()}
    ready = all(checks.values())
    return json_response({"status": "ready" if ready else "starting", "checks": checks}, 200 if ready else 503)
