"""What every service entry point shares: ``--help`` with its variables, settings, logs,
metrics and a graceful stop on SIGTERM/SIGINT (a second signal stops at once)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pyarrow as pa
import structlog
import uvloop

from archlab.core.errors import UserError
from archlab.core.observability import configure_logging, start_metrics_server
from archlab.core.settings import Settings, describe_env_vars, load_settings

S = TypeVar("S", bound=Settings)


def run_service(
    name: str,
    description: str,
    main: Callable[[S, asyncio.Event], Awaitable[None]],
    model: type[S],
    argv: list[str] | None = None,
    *,
    wait_for: Callable[[S, asyncio.Event], Awaitable[bool]] | None = None,
) -> None:
    """Parse ``--help``, load settings, then run ``main`` until it returns or a signal asks to stop.

    ``wait_for`` (e.g. ``kafka.clients.wait_for_kafka``) runs first: a service started before what it
    needs is reachable waits for it, stoppable by a signal, instead of crashing."""
    tune_process()
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=description,
        epilog=describe_env_vars(model),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = load_settings(model)
    configure_logging(settings)
    start_metrics_server(settings)
    try:
        uvloop.run(_supervise(name, main, settings, wait_for))  # libuv's event loop: less overhead per I/O event
    except UserError as exc:  # e.g. a broken contract: the user's to fix, so say what, not a traceback
        sys.exit(f"{exc.label}: {exc}")


def tune_process() -> None:
    """How every service's process runs (and a bench that runs a stage in its own process).

    Arrow's default allocator (mimalloc) keeps the memory of freed batches for itself: a service under a
    backlog held ~60 MB more at its peak than with the C allocator, at the same speed. Python's collector,
    at its default thresholds, walks every long-lived object again each time their number grows by a
    quarter: gold keeps a few objects per open window, and those passes cost its high-cardinality case
    ~30 % of its speed; reference counting frees nearly everything else anyway."""
    pa.set_memory_pool(pa.system_memory_pool())
    gc.set_threshold(50_000, 20, 100)


async def _supervise(
    name: str,
    main: Callable[[S, asyncio.Event], Awaitable[None]],
    settings: S,
    wait_for: Callable[[S, asyncio.Event], Awaitable[bool]] | None,
) -> None:
    log = structlog.get_logger(name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal, stopping now")
            sys.exit(128 + signum)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    log.info("starting", service=name)
    if wait_for is None or await wait_for(settings, stop):
        await main(settings, stop)
    log.info("stopped", service=name)


async def run_together(stop: asyncio.Event, *parts: Awaitable[None]) -> None:
    """Run a service's parts until all return; when one fails, stop the others and fail loudly."""
    tasks = [asyncio.ensure_future(part) for part in parts]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if task.exception() is not None:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise task.exception()  # type: ignore[misc]
    await asyncio.gather(*tasks)
