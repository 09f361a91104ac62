"""api: the lakehouse's query API (FastAPI on uvicorn) over the gold lake, read with DuckDB and
overlaid with the gold topic, plus data quality and pipeline health. OpenAPI at /docs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from archlab.core.service import run_service
from archlab.kafka.clients import wait_for_kafka
from archlab.serving.api import ApiSettings, create_app

SETTINGS_MODEL = ApiSettings


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: run_service owns SIGTERM/SIGINT and sets ``stop``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main(settings: ApiSettings, stop: asyncio.Event) -> None:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=5, lifespan="on")
    server = _Server(config)

    async def stop_when_asked() -> None:
        await stop.wait()
        app.state.serving.close_streams()  # so that shutdown does not wait on the open event streams
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    if not stop.is_set():  # uvicorn gave up on its own (port taken, startup failed): fail loudly
        raise SystemExit(1)


if __name__ == "__main__":
    run_service("api", __doc__ or "", main, ApiSettings, wait_for=wait_for_kafka)
