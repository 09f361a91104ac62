"""What every ``lab`` command shares: its settings and the console it reports progress and errors on."""

from __future__ import annotations

from rich.console import Console

from archlab.core import settings as lab_settings
from archlab.core.settings import Settings

console = Console(stderr=True)
"""Progress, summaries and errors go to stderr, so that stdout carries only the data (``--json``, records)."""


def load_settings() -> Settings:
    """The ``LAB_*`` settings (and ``.env``) as every service loads them; exit 2 naming what is wrong."""
    return lab_settings.load_settings(Settings)
