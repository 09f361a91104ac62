"""``/v1/tables``: the lake's Delta tables (version, files, rows, size, last commit) and each one's history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from archlab.contract import Contract
from archlab.core import names
from archlab.lake.tables import Tables
from archlab.serving.api import models
from archlab.serving.api.deps import ServingDep, json_response

router = APIRouter(tags=["tables"])

HISTORY_LIMIT = 100
"""The most commits one history answer lists (the newest first)."""


def table_paths(contracts: dict[str, Contract]) -> list[str]:
    """Every table the served datasets write: one per layer, and one per aggregate in gold."""
    return [path for dataset, contract in contracts.items() for layer in names.LAYERS
            for path in ([names.table_path(layer, dataset, a.name) for a in contract.aggregates] if layer == "gold"
                         else [names.table_path(layer, dataset)])]


@router.get("/v1/tables", response_model=models.LakeTables)
async def list_tables(serving: ServingDep) -> Response:
    """Every lake table of the served datasets with its version, last commit, files, rows and bytes,
    as the pipeline monitor last sampled them from the Delta logs (every LAB_API_PIPELINE_POLL_S)."""
    sample = serving.monitor.latest if serving.monitor else {"sampled_at": None, "lake": []}
    return json_response({"sampled_at": sample["sampled_at"], "tables": sample["lake"]})


@router.get("/v1/tables/{table:path}/history", response_model=models.TableHistory,
            responses={404: {"model": models.Problem}})
async def table_history(
    table: Annotated[str, Path(description="A table path as /v1/tables lists it, e.g. silver/orders")],
    serving: ServingDep,
    limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT, description="Commits to list, the newest first")] = 20,
) -> Response:
    """The table's newest commits from its Delta log: version, time, operation, its parameters and metrics
    (rows and files added or removed). Empty before the table's first commit."""
    known = table_paths(serving.contracts)
    if table not in known:
        raise HTTPException(404, f"unknown table {table!r} (path parameter table); known: {', '.join(known)}")
    commits = await run_in_threadpool(history, serving.tables, table, limit)
    return json_response({"table": table, "commits": commits})


def history(tables: Tables, path: str, limit: int) -> list[dict[str, Any]]:
    delta = tables.open(path)
    if delta is None:
        return []
    return [{
        "version": commit.get("version"),
        "timestamp": _iso(commit.get("timestamp")),
        "operation": commit.get("operation", ""),
        "parameters": {str(k): str(v) for k, v in (commit.get("operationParameters") or {}).items()},
        "metrics": {str(k): v for k, v in (commit.get("operationMetrics") or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)},
    } for commit in delta.history(limit)]


def _iso(millis: int | None) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
