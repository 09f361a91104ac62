"""One ``APIRouter`` per resource; ``api_router`` holds them in the order the OpenAPI document lists them."""

from fastapi import APIRouter

from archlab.serving.api.routes import aggregates, alerts, datasets, health, kpis, pipeline, quality, tables

api_router = APIRouter()
for resource in (datasets, aggregates, kpis, quality, alerts, pipeline, tables, health):
    api_router.include_router(resource.router)
