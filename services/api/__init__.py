"""api: serves gold aggregates, KPIs, data quality and pipeline health over HTTP (FastAPI)."""
