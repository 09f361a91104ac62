"""The dashboard's only way to the data: the API, with failures turned into one readable message."""

from __future__ import annotations

from typing import Any

import httpx


class ApiUnavailable(RuntimeError):
    """The API did not answer, or answered with an error; the message says which and where."""


class ApiClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def get(self, path: str, **params: Any) -> Any:
        try:
            response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise ApiUnavailable(f"the API at {self.base_url} is not answering ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise ApiUnavailable(f"the API answered {response.status_code} to {path}: {response.text[:300]}")
        return response.json()

    def datasets(self) -> list[dict[str, Any]]:
        return self.get("/v1/datasets")["datasets"]

    def kpis(self, dataset: str) -> dict[str, Any]:
        return self.get(f"/v1/datasets/{dataset}/kpis")

    def windows(self, dataset: str, aggregate: str, start: str | None, limit: int = 1000) -> list[dict[str, Any]]:
        """Every window of an aggregate from ``start`` on (all pages)."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(f"/v1/datasets/{dataset}/aggregates/{aggregate}", **{"from": start}, limit=limit,
                            cursor=cursor)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None or len(items) >= 20_000:
                return items

    def quality(self, dataset: str, start: str | None) -> dict[str, Any]:
        return self.get(f"/v1/datasets/{dataset}/quality", **{"from": start})

    def alerts(self, recent: str = "24h") -> dict[str, Any]:
        """Every dataset's open alerts and those resolved within ``recent``."""
        return self.get("/v1/alerts", recent=recent)

    def pipeline(self) -> dict[str, Any]:
        return self.get("/v1/pipeline")

    def tables(self) -> dict[str, Any]:
        return self.get("/v1/tables")

    def history(self, table: str, limit: int = 10) -> list[dict[str, Any]]:
        return self.get(f"/v1/tables/{table}/history", limit=limit)["commits"]
