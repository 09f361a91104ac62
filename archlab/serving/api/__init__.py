"""The serving layer: a FastAPI application over the gold lake, overlaid with the gold topic.

``create_app`` builds it; ``services/api`` runs it on uvicorn.
"""

from archlab.serving.api.app import create_app
from archlab.serving.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
