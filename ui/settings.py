"""Settings of the dashboard: only where the API is and how often to refresh (``LAB_<FIELD>``).

The dashboard reads everything through the API, so it asks for no Kafka, lake or secret setting.
"""

from __future__ import annotations

from pydantic import Field

from archlab.core.settings import LabSettings


class UiSettings(LabSettings):
    api_url: str = Field("http://localhost:8000", description="Base URL of the API the dashboard reads")
    ui_refresh_s: float = Field(2.0, gt=0, description="Seconds between two refreshes of the live panels")
    ui_api_timeout_s: float = Field(5.0, gt=0, description="Seconds the dashboard waits for one API answer")
