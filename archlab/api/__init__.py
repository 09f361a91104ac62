"""The serving layer: a FastAPI application over the gold lake, overlaid with the gold topic.

``create_app`` builds it; ``services/api`` runs it on uvicorn.
"""

from archlab.api.app import create_app
from archlab.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
