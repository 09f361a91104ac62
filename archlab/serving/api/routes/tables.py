"""``/v1/tables``: the lake's Delta tables (version, files, rows, size, last commit) and each one's history."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from archlab.contract import Contract
from archlab.core import names
from archlab.lake.tables import Tables
from archlab.serving.api import models
from archlab.serving.api.deps import ServingDep, json_response
from archlab.serving.api.routes.aggregates import PAGE_CACHE_SIZE
from archlab.serving.api.serving import Serving

router = APIRouter(tags=["tables"])

_HANDLES_LOCK = threading.Lock()
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
    document = await run_in_threadpool(_history_document, serving, table, limit)
    return Response(document, media_type="application/json")


def _history_document(serving: Serving, path: str, limit: int) -> bytes:
    """The answer, kept per table version: the table's handle is kept and brought up to date (its new
    commits only), where opening it afresh per request read its whole log from the last checkpoint on.
    One request thread at a time: a table handle is not to be used by two threads at once."""
    with _HANDLES_LOCK:
        return _history_locked(serving, path, limit)


def _history_locked(serving: Serving, path: str, limit: int) -> bytes:
    delta = serving.table_handles.get(path)
    if delta is None:
        delta = serving.tables.open(path)
        if delta is None:
            return orjson.dumps({"table": path, "commits": []})
        serving.table_handles[path] = delta
    else:
        delta.update_incremental()
    key = ("history", path, delta.version(), limit)
    document = serving.pages.get(key)
    if document is None:
        document = serving.pages[key] = orjson.dumps({"table": path, "commits": history(serving.tables, path,
                                                                                           delta.version(), limit)})
        while len(serving.pages) > PAGE_CACHE_SIZE:
            serving.pages.popitem(last=False)
    return document


def history(tables: Tables, path: str, version: int, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` commits up to ``version``, the newest first, each read from its own log file
    (delta-rs's history of a handle brought up to date mixes up its commits)."""
    commits = []
    for number in range(version, max(-1, version - limit), -1):
        raw = tables.lake.read_bytes(f"{path}/_delta_log/{number:020d}.json")
        if raw is None:  # cleaned up from the log: no older commit is left either
            break
        info = next((orjson.loads(line)["commitInfo"] for line in raw.splitlines() if b'"commitInfo"' in line), {})
        commits.append({**info, "version": number})
    return [{
        "version": commit.get("version"),
        "timestamp": _iso(commit.get("timestamp")),
        "operation": commit.get("operation", ""),
        "parameters": {str(k): str(v) for k, v in (commit.get("operationParameters") or {}).items()},
        "metrics": {str(k): v for k, v in (commit.get("operationMetrics") or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)},
    } for commit in commits]


def _iso(millis: int | None) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
