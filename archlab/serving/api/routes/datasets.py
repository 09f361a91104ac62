"""``GET /v1/datasets``: what is served, as the contracts describe it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from archlab.contract import Contract
from archlab.contract.aggregates import measure_type
from archlab.serving.api import models
from archlab.serving.api.deps import ServingDep, json_response

router = APIRouter(tags=["datasets"])


@router.get("/v1/datasets", response_model=models.Datasets)
async def list_datasets(serving: ServingDep) -> Response:
    """Every served dataset with its aggregates, their dimensions and measures (from the contracts), each
    measure with its type and unit so that clients format figures alike."""
    return json_response({"datasets": [_describe(c) for c in serving.contracts.values()]})


def _describe(contract: Contract) -> dict[str, Any]:
    columns = dict(contract.silver_types())
    return {
        "name": contract.dataset, "description": contract.description, "contract_version": contract.version,
        "aggregates": [{
            "name": a.name, "description": a.description, "window_seconds": a.window.total_seconds(),
            "grace_seconds": a.grace.total_seconds(), "dimensions": list(a.group_by),
            "measures": [{"name": m.name, "fn": m.fn, "description": m.description,
                          "type": measure_type(m, columns), "unit": m.unit} for m in a.measures],
        } for a in contract.aggregates],
    }
