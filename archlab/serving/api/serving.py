"""What the routes read (one ``Serving`` per application) and the background jobs that keep it
fresh: the gold topic follower, the lake refresh, the rebuild of snapshots nobody has read lately, the
pipeline monitor and the alerts follower."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from deltalake import DeltaTable

from archlab.contract import Contract, load_contracts
from archlab.core.retry import backoff
from archlab.lake.tables import Tables
from archlab.serving.api.alerts import AlertBook, AlertFollower
from archlab.serving.api.live import GoldFollower, Hub
from archlab.serving.api.pipeline import PipelineMonitor
from archlab.serving.api.quality import QualityFigures
from archlab.serving.api.settings import ApiSettings
from archlab.serving.api.store import GoldView

log = structlog.get_logger("api")

SNAPSHOT_SPACING_S = 0.2
"""The least time between two rebuilds of a view that readers ask for (a reader waits for at most one
rebuild, of everything received meanwhile): a busy dashboard costs at most five rebuilds a second."""
UNREAD_REBUILD_S = 5.0
"""How often topic updates nobody has read are merged anyway, which bounds what waits in memory. A view is
rebuilt when someone reads it, not whenever the topic moves: following a stream nobody watches is cheap."""
REBUILD_TICK_S = 1.0

@dataclass
class Serving:
    """Everything the routes read, built once per application."""

    settings: ApiSettings
    contracts: dict[str, Contract]
    tables: Tables
    views: dict[str, GoldView]
    hub: Hub = field(default_factory=Hub)
    alerts: AlertBook = field(default_factory=AlertBook)
    pages: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)
    quality: dict[str, QualityFigures] = field(default_factory=dict)
    table_handles: dict[str, DeltaTable] = field(default_factory=dict)  # kept up to date by whoever reads one
    follower: GoldFollower | None = None
    monitor: PipelineMonitor | None = None
    alert_follower: AlertFollower | None = None
    rebuilding: dict[str, asyncio.Lock] = field(default_factory=dict)  # one rebuild of a view at a time

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Serving:
        """The contracts of ``settings.datasets`` and a gold view of each (nothing read yet)."""
        contracts = load_contracts(settings.contracts_dir, settings.datasets)
        tables = Tables.from_settings(settings)
        return cls(settings, contracts, tables, {name: GoldView(c, tables) for name, c in contracts.items()},
                   alerts=AlertBook(settings.api_alerts_resolved_kept),
                   quality={name: QualityFigures(tables, name, settings.api_lake_refresh_s) for name in contracts})

    async def rebuild_if_due(self, view: GoldView, spacing_s: float = SNAPSHOT_SPACING_S) -> None:
        """Lay what the view received over its snapshot, in a thread, unless it was rebuilt less than
        ``spacing_s`` ago; concurrent readers wait for the same rebuild."""
        if not view.due(spacing_s):
            return
        async with self.rebuilding.setdefault(view.contract.dataset, asyncio.Lock()):
            if view.due(spacing_s):
                await asyncio.to_thread(view.rebuild, self.settings.api_live_ttl_s)

    def close_streams(self) -> None:
        """End every open event stream, gold's and the alerts' (the server is stopping)."""
        self.hub.close()
        self.alerts.hub.close()


def start_background(serving: Serving) -> list[asyncio.Task[None]]:
    """Start the jobs that fill and refresh ``serving``; cancel the returned tasks to stop them."""
    settings = serving.settings
    serving.follower = GoldFollower(settings, serving.views, serving.hub)
    serving.monitor = PipelineMonitor(settings, serving.tables, serving.contracts)
    serving.alert_follower = AlertFollower(settings, list(serving.contracts), serving.alerts)

    async def refresh_lake() -> None:
        while True:
            for view in serving.views.values():
                await asyncio.to_thread(view.refresh_lake)
            for figures in serving.quality.values():
                if not figures.summed:
                    await asyncio.to_thread(figures.sum_history)
            await asyncio.sleep(settings.api_lake_refresh_s)

    async def rebuild_unread_snapshots() -> None:
        while True:
            for view in serving.views.values():
                view.expire_live(settings.api_live_ttl_s)
                await serving.rebuild_if_due(view, UNREAD_REBUILD_S)
            await asyncio.sleep(REBUILD_TICK_S)

    jobs: dict[str, Callable[[], Awaitable[None]]] = {
        "gold follower": serving.follower.run, "lake refresh": refresh_lake,
        "unread snapshot rebuild": rebuild_unread_snapshots, "pipeline monitor": serving.monitor.run,
        "alerts follower": serving.alert_follower.run,
    }
    return [asyncio.create_task(_keep_running(name, job)) for name, job in jobs.items()]


async def _keep_running(name: str, job: Callable[[], Awaitable[None]]) -> None:
    """Run a background job forever: a failure (broker or S3 away) is logged and retried with backoff
    (1 s doubling to 30 s, afresh once the job has run for a minute); a job that returns starts again
    after a second."""
    while True:
        async for attempt in backoff("background job", first_s=1.0, max_s=30.0, reset_after_s=60.0, job=name):
            with attempt:
                await job()
        await asyncio.sleep(1.0)
