"""Structured logs and Prometheus metrics, set up the same way in every service."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import start_http_server

from archlab.core.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Structured logs on stderr: console text by default, JSON lines with LAB_LOG_JSON=true."""
    level = logging.getLevelName(settings.log_level.upper())
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    for noisy in ("aiokafka", "botocore", "s3fs", "aiobotocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    renderer = structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def start_metrics_server(settings: Settings) -> None:
    """Serve ``/metrics`` on LAB_METRICS_PORT; port 0 means no server (tests, CLI)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
