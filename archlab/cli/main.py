"""The ``lab`` command: produce, replay, tail and inspect the running lakehouse.

It reads the same ``LAB_*`` variables as the services, and also the project's ``.env`` file when
present, so it works next to ``make up`` without exporting anything.
"""

from __future__ import annotations

import asyncio

import typer

from archlab.cli.backfill import run_backfill
from archlab.cli.common import console, load_settings
from archlab.cli.infra import UP_EPILOG, down, infra_app, up
from archlab.cli.produce import produce, replay
from archlab.cli.status import status
from archlab.cli.tables import history, tables
from archlab.cli.topics import tail
from archlab.kafka.topics import ensure_topics
from archlab.lake.store import ensure_bucket

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(infra_app, name="infra", help="Run the native Kafka and MinIO (make infra-up / infra-down).")
app.command(help="Start Kafka, MinIO and every service in the foreground; Ctrl-C stops everything.",
            epilog=UP_EPILOG)(up)
app.command(help="Stop everything `lab up` started.")(down)
for command in (produce, replay, tail, status, tables, history):
    app.command()(command)
app.command("backfill")(run_backfill)


@infra_app.command("init")
def infra_init() -> None:
    """Create the bucket and every dataset's topics (idempotent)."""
    settings = load_settings()
    ensure_bucket(settings)
    asyncio.run(ensure_topics(settings))
    console.print(f"bucket {settings.bucket!r} and topics of {', '.join(settings.datasets)} are ready")


if __name__ == "__main__":
    app()
