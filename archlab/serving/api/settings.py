"""Settings of the API, on top of the shared ones (every field is ``LAB_<FIELD>``)."""

from __future__ import annotations

from pydantic import Field

from archlab.core.settings import CommaList, Settings


class ApiSettings(Settings):
    api_host: str = Field("0.0.0.0", description="Address the API listens on")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on")
    api_lake_refresh_s: float = Field(
        2.0, gt=0, description="How often the gold tables are checked for a new version, and the quality figures "
                               "(dq and quarantine tables) are read anew"
    )
    api_live_lookback_s: float = Field(
        120.0, ge=0, description="On start, the gold topic is read from this far back (covers the lake's lag)"
    )
    api_live_ttl_s: float = Field(
        300.0, gt=0, description="A gold update read from the topic is kept this long, then the lake is trusted"
    )
    api_alerts_resolved_kept: int = Field(
        200, ge=0, description="Resolved alerts kept in memory per dataset, the newest (every open alert is kept)"
    )
    api_pipeline_poll_s: float = Field(5.0, gt=0, description="How often consumer lag and lake tables are sampled")
    api_service_groups: CommaList = Field(
        default_factory=lambda: ["bronze_sink", "silver_refiner", "gold_aggregator"],
        description="Consumer group prefixes that name a service, comma-separated (longest prefix wins)",
    )
