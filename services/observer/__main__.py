"""observer: watches every dataset's objectives (its contract's ``objectives:``) on `<dataset>.dq` and
the pipeline's health, as a faust-streaming app; writes each alert change to `<dataset>.alerts`, posts
it to LAB_ALERT_WEBHOOK_URL if set, and lands the alerts' history in the Delta table
alert_history/<dataset>."""

from __future__ import annotations

import asyncio

from archlab.contract import load_contracts
from archlab.core import names
from archlab.core.service import run_service, run_together
from archlab.core.settings import ObserverSettings
from archlab.kafka.clients import wait_for_kafka
from archlab.observe.history import AlertHistoryEncoder
from archlab.observe.run import observe
from archlab.streaming.lake_sink import land, prepare_tables

SETTINGS_MODEL = ObserverSettings  # defined with the settings family in archlab.core.settings


async def main(settings: ObserverSettings, stop: asyncio.Event) -> None:
    contracts = load_contracts(settings.contracts_dir, settings.datasets)
    encoder = AlertHistoryEncoder()
    if not await prepare_tables(settings, [t for d in contracts for t in encoder.targets(d)], stop):
        return
    await run_together(
        stop,
        observe(settings, contracts, stop),
        land(settings, encoder, [names.alerts_topic(d) for d in contracts], names.group(settings.observer_group, "history"), stop),
    )


if __name__ == "__main__":
    run_service("observer", __doc__ or "", main, ObserverSettings, wait_for=wait_for_kafka)
