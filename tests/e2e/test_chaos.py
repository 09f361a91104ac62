"""A small `make chaos`: 50k events over orders and sensors while bronze_sink, silver_refiner and
gold_aggregator are killed with SIGKILL five times, the Kafka broker is restarted once and MinIO
is stopped for 10 s; afterwards bronze, silver ∪ quarantine and gold must be exact (bench/chaos.py).

It runs on its own throw-away Kafka + MinIO (the session stack is never restarted under other
tests). Missing infrastructure fails the test, it is never skipped.
"""

from __future__ import annotations

import pytest

from archlab.devstack.native import NotProvisionedError
from bench.chaos import Plan, run_chaos
from bench.common import throwaway_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

PLAN = Plan(events=50_000, kills=5, kafka_restarts=1, minio_stop_s=10.0, produce_s=60.0, settle_timeout_s=120.0,
            seed=11)


async def test_pipeline_stays_exact_through_kills_a_broker_restart_and_a_minio_outage() -> None:
    lines: list[str] = []
    try:
        with throwaway_stack("chaos") as (stack, settings):
            outcome = await run_chaos(PLAN, stack, settings, say=lines.append)
    except NotProvisionedError as exc:
        pytest.fail(f"the real infrastructure is required: {exc}", pytrace=False)
    verdict = "\n".join(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in outcome.checks)
    timeline = "\n".join(lines[-60:])
    assert outcome.ok, f"{verdict}\n\ntimeline:\n{timeline}"
    # The run really did what it claims: every dataset and layer was compared, with data in it.
    assert len(outcome.checks) == 5 * len(outcome.datasets) + 2, verdict
    for name in outcome.datasets:
        assert outcome.stats[f"{name}_raw"] >= PLAN.events // 2 * 0.9, outcome.stats
        assert outcome.stats[f"{name}_silver"] > 0, outcome.stats
    assert outcome.stats["kills"] >= PLAN.kills and outcome.stats["kafka_restarts"] == 1, outcome.stats
    assert outcome.stats["minio_stops"] == 1, outcome.stats
