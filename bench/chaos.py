"""Chaos: a long run over `orders` and `sensors` while services are killed with SIGKILL, the Kafka
broker is restarted and MinIO is stopped; then every layer is checked against what was sent.
(One module, a little over 400 lines: the plan, the controller that injects failures and the verdict
are one story; the checks themselves live in archlab/testing/verify.py.)

    .venv/bin/python -m bench chaos                      # 500k events, 20 kills, Kafka restart, MinIO 30 s
    .venv/bin/python -m bench.chaos --events 50000 --kills 5 --minio-stop 10 --produce-s 60

The harness starts its own throw-away Kafka + MinIO on free ports, copies the shipped contracts
under fresh dataset names with a 7-hour grace period (the generator's late events are at most
6 hours behind, so every valid event belongs in gold), runs bronze_sink, silver_refiner and
gold_aggregator as processes (`python -m services.<name>`), produces a paced synthetic stream and,
meanwhile, kills a random service at random moments (restarting it at once), restarts the broker
once and stops MinIO once. A service that exits on its own is restarted too, as `make up`'s
supervisor would, and reported. Once the pipeline has settled it checks:

* bronze holds every raw (partition, offset) exactly once, byte-identical;
* silver ∪ quarantine equals raw minus the injected duplicates (header `lab-injected: duplicate`),
  each once, on the topics and on the lake (lineage columns);
* gold, the latest row per key on the lake and the latest record per key on the gold topic, equals
  the DuckDB batch truth over silver (archlab/testing/verify.py: the checks the integration tests use);
* every service is still running.

It prints a verdict table, writes bench/results/chaos.json and .md, and exits 1 on any difference.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from archlab.contract import load_contract
from archlab.core.names import group, raw_topic
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.native import NativeStack
from archlab.devstack.services import PIPELINE_SERVICES
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.topics import ensure_topics
from archlab.streaming.readiness import owns_partitions
from archlab.testing.processes import ServiceProcess, free_port
from archlab.testing.verify import Check, PipelineVerifier
from bench.common import RESULTS, report, throwaway_stack

DATASETS = ("orders", "sensors")
GRACE = "7h"  # > the generator's 6-hour lateness: no valid event is legitimately left out of gold
LOGS = PROJECT_ROOT / "test-artifacts"
Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """What the chaos run does. ``events`` is the total over both datasets."""

    events: int = 500_000
    kills: int = 20
    kafka_restarts: int = 1
    minio_stop_s: float = 30.0
    produce_s: float = 240.0  # the producers are paced so that sending lasts about this long
    settle_timeout_s: float = 900.0
    seed: int = 7


@dataclass
class Outcome:
    plan: Plan
    datasets: dict[str, str]  # fresh name -> shipped contract it copies
    checks: list[Check] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


# ---------------------------------------------------------------------- infrastructure and services
class Service:
    """One pipeline service that the harness kills and restarts: every start is a new process
    (``ServiceProcess``: its own process group, so ``kill9`` kills all of it) with its own log."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.env, self.logs = name, env, logs
        self.starts = 0
        self.process = self._launch()

    def _launch(self) -> ServiceProcess:
        self.starts += 1
        self.metrics_port = free_port()  # where working() reads its readiness gauge
        env = {**self.env, "LAB_METRICS_PORT": str(self.metrics_port)}
        return ServiceProcess(self.name, env, self.logs / f"{self.name}-{self.starts}.log")

    def start(self) -> None:
        self.process = self._launch()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def alive(self) -> bool:
        return self.process.alive()

    def exit_code(self) -> int | None:
        """The exit code of a process that has exited by itself."""
        return self.process.wait(0)

    def kill9(self) -> None:
        self.process.kill9()

    def terminate(self, timeout: float = 30) -> int | None:
        return self.process.terminate(timeout)

    def working(self) -> bool:
        return owns_partitions(self.metrics_port, ".")

    def log_tail(self, lines: int = 15) -> str:
        return self.process.log_tail(lines)


def copy_contracts(folder: Path, originals: tuple[str, ...] = DATASETS) -> dict[str, str]:
    """Fresh dataset names (so reruns never mix) described by copies of the shipped contracts, every
    aggregate's grace set to ``GRACE``. Returns {fresh name: original}."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "reference").exists():
        shutil.copytree(PROJECT_ROOT / "contracts" / "reference", folder / "reference")
    names = {}
    for original in originals:
        name = f"c{original[0]}{uuid.uuid4().hex[:8]}"
        text = (PROJECT_ROOT / "contracts" / f"{original}.yaml").read_text()
        text = text.replace(f"dataset: {original}", f"dataset: {name}", 1)
        text = re.sub(r"(?m)^(\s*grace:\s*)\S+", rf"\g<1>{GRACE}", text)
        (folder / f"{name}.yaml").write_text(text)
        names[name] = original
    return names


def service_env(settings: Settings, datasets: list[str], contracts: Path, run: str) -> dict[str, str]:
    return {
        **os.environ,
        "LAB_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LAB_S3_ENDPOINT": settings.s3_endpoint,
        "LAB_S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "LAB_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "LAB_BUCKET": settings.bucket,
        "LAB_DATASETS": ",".join(datasets),
        "LAB_CONTRACTS_DIR": str(contracts),
        "LAB_BRONZE_GROUP": group("bronze", run),
        "LAB_SILVER_GROUP": group("silver", run),
        "LAB_GOLD_GROUP": group("gold", run),
        "LAB_INSTANCE_ID": "chaos",
        "LAB_FLUSH_INTERVAL_S": "2",
        "LAB_MAINTENANCE_INTERVAL_S": "10",
        "LAB_LOG_JSON": "false",
    }


# ---------------------------------------------------------------------- the run
class Controller:
    def __init__(self, plan: Plan, stack: NativeStack, services: dict[str, Service], say: Say) -> None:
        self.plan, self.stack, self.services, self.say = plan, stack, services, say
        self.rng = random.Random(plan.seed)
        self.clock = self.started = time.monotonic()  # timeline clock; disruptions count from `started`
        self.timeline: list[str] = []
        self.kills: dict[str, int] = dict.fromkeys(services, 0)
        self.self_exits: list[str] = []
        self.kafka_restarts = 0
        self.minio_stops = 0
        self.outage_s: dict[str, float] = {}
        self._stopping = False

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.clock:7.1f}s  {text}"
        self.timeline.append(line)
        self.say(line)

    async def kill(self, name: str) -> None:
        service = self.services[name]
        old = service.pid if service.alive() else None
        service.kill9()
        service.start()
        self.kills[name] += 1
        self.note(f"kill -9 {name} (pid {old}) -> restarted as pid {service.pid}")

    async def restart_kafka(self) -> None:
        self.note("Kafka broker: stopping (controlled shutdown)")
        began = time.monotonic()
        await asyncio.to_thread(self.stack.stop_kafka)
        self.note("Kafka broker: stopped, starting again")
        await asyncio.to_thread(self.stack.start_kafka)
        self.outage_s["kafka"] = round(time.monotonic() - began, 1)
        self.kafka_restarts += 1
        self.note(f"Kafka broker: healthy again after {self.outage_s['kafka']} s")

    async def stop_minio(self) -> None:
        self.note(f"MinIO: stopping for {self.plan.minio_stop_s:.0f} s")
        began = time.monotonic()
        await asyncio.to_thread(self.stack.stop_minio)
        await asyncio.sleep(self.plan.minio_stop_s)
        await asyncio.to_thread(self.stack.start_minio)
        self.outage_s["minio"] = round(time.monotonic() - began, 1)
        self.minio_stops += 1
        self.note(f"MinIO: healthy again after {self.outage_s['minio']} s")

    async def watch(self) -> None:
        """Restart a service that exited on its own (as a supervisor would) and record it."""
        while not self._stopping:
            for name, service in self.services.items():
                if not service.alive() and not self._stopping:
                    code = service.exit_code()
                    tail = service.log_tail(3).replace("\n", " | ")
                    self.self_exits.append(f"{name} exit {code}")
                    self.note(f"{name} exited on its own (code {code}); restarting. Log: {tail[-300:]}")
                    service.start()
            await asyncio.sleep(0.5)

    async def disrupt(self) -> None:
        """Kills at random moments over the production window; one broker restart; one MinIO stop."""
        span = self.plan.produce_s
        order = list(self.services)
        self.rng.shuffle(order)  # every service is killed at least once (when kills >= 3)
        targets = order[: self.plan.kills] + [self.rng.choice(order) for _ in range(self.plan.kills - len(order))]
        times = [self.rng.uniform(0.05, 0.95) * span for _ in targets]
        outages: list[tuple[float, str, Any]] = []
        for i in range(self.plan.kafka_restarts):
            at = self.rng.uniform(0.25, 0.4) * span + i * 0.1 * span
            outages.append((at, "kafka", self.restart_kafka))
            times.append(at + 3.0)  # a service restarted while the broker is down
        if self.plan.minio_stop_s > 0:
            at = self.rng.uniform(0.55, 0.7) * span
            outages.append((at, "minio", self.stop_minio))
            times.append(at + 1.0 + 0.4 * self.plan.minio_stop_s)  # one (re)assigned while MinIO is down
        # The kills during outages replace random ones, so the total stays ``plan.kills``.
        times = times[len(times) - len(targets):] if len(times) > len(targets) else times
        actions: list[tuple[float, str, Any]] = outages + [
            (at, f"kill {name}", lambda n=name: self.kill(n)) for at, name in zip(times, targets, strict=True)
        ]
        running: list[asyncio.Task] = []
        for at, what, action in sorted(actions, key=lambda a: a[0]):
            await asyncio.sleep(max(0.0, self.started + at - time.monotonic()))
            if what in ("kafka", "minio"):
                running.append(asyncio.create_task(action()))  # kills go on during an outage
            else:
                await action()
        await asyncio.gather(*running)

    def stop(self) -> None:
        self._stopping = True


async def run_chaos(plan: Plan, stack: NativeStack, settings: Settings, say: Say = print) -> Outcome:
    """Run the chaos plan against a started stack; returns the checks (the caller prints them)."""
    run = uuid.uuid4().hex[:8]
    work = LOGS / f"chaos-{run}"
    contracts_dir = work / "contracts"
    datasets = copy_contracts(contracts_dir)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    outcome = Outcome(plan, datasets)
    names = list(datasets)
    await ensure_topics(settings, names)
    say(f"run {run}: datasets {', '.join(f'{n} ({o})' for n, o in datasets.items())}; logs in {work / 'logs'}")
    env = service_env(settings, names, contracts_dir, run)
    services = {name: Service(name, env, work / "logs") for name in PIPELINE_SERVICES}
    controller = Controller(plan, stack, services, say)
    began = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while not all(s.working() for s in services.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        controller.note("services up: " + ", ".join(f"{n} pid {s.pid}" for n, s in services.items()))
        per_dataset = plan.events // len(names)
        rate = per_dataset / plan.produce_s
        controller.started = time.monotonic()
        controller.note(f"producing {per_dataset:,} events per dataset at {rate:,.0f}/s each")
        sent = {name: 0 for name in names}

        def progress(name: str) -> Callable[[int], None]:
            def add(n: int) -> None:
                sent[name] += n
            return add

        producers = [asyncio.create_task(produce_synthetic(
            settings, datasets[name], count=per_dataset, rate=rate, seed=plan.seed + i, topic=raw_topic(name),
            progress=progress(name))) for i, name in enumerate(names)]
        watcher = asyncio.create_task(controller.watch())
        disruption = asyncio.create_task(controller.disrupt())

        async def report_progress() -> None:
            while True:
                await asyncio.sleep(15)
                controller.note("sent " + ", ".join(f"{n}: {c:,}" for n, c in sent.items()))

        reporter = asyncio.create_task(report_progress())
        summaries = await asyncio.gather(*producers, return_exceptions=True)
        reporter.cancel()
        for name, summary in zip(names, summaries, strict=True):
            if isinstance(summary, BaseException):
                controller.note(f"producer {name} failed: {summary!r}")
                outcome.stats[f"{name}_produce_error"] = repr(summary)
            else:
                controller.note(f"producer done: {summary.line()}")
                outcome.stats[f"{datasets[name]}_sent"] = summary.sent
                outcome.stats[f"{datasets[name]}_send_failed"] = summary.failed
        await disruption
        produced_s = time.monotonic() - controller.started
        controller.note("chaos over; waiting for the pipeline to settle")
        settle_began = time.monotonic()
        verifier = PipelineVerifier(settings, {n: load_contract(contracts_dir / f"{n}.yaml") for n in names},
                                    say=controller.note, labels={n: f"{datasets[n]} ({n})" for n in names})
        await verifier.load_raw()
        await verifier.settle(plan.settle_timeout_s)
        settle_s = time.monotonic() - settle_began
        controller.stop()
        await watcher
        outcome.checks = await verifier.checks()
        total_kills = sum(controller.kills.values())
        outcome.checks.append(Check(
            "chaos happened as planned",
            total_kills >= plan.kills and controller.kafka_restarts >= plan.kafka_restarts
            and controller.minio_stops >= (1 if plan.minio_stop_s > 0 else 0),
            f"{total_kills} kills ({', '.join(f'{n} {k}' for n, k in controller.kills.items())}), "
            f"{controller.kafka_restarts} broker restart(s), {controller.minio_stops} MinIO stop(s)",
        ))
        dead = [name for name, service in services.items() if not service.alive()]
        exits = (f"; {len(controller.self_exits)} exit(s) on their own, restarted by the harness: "
                 + ", ".join(controller.self_exits)) if controller.self_exits else "; none exited on its own"
        outcome.checks.append(Check("every service running at the end", not dead,
                                    (f"all {len(services)} alive" if not dead else f"not running: {dead}") + exits))
        outcome.timeline = controller.timeline
        outcome.stats.update({
            "events": plan.events, "kills": total_kills,
            **{f"kills_{name}": count for name, count in controller.kills.items()},
            "kafka_restarts": controller.kafka_restarts, "kafka_outage_s": controller.outage_s.get("kafka"),
            "minio_stops": controller.minio_stops, "minio_outage_s": controller.outage_s.get("minio"),
            "self_exits": len(controller.self_exits), "self_exit_details": "; ".join(controller.self_exits) or "none",
            "produce_s": round(produced_s, 1), "settle_s": round(settle_s, 1),
            "total_s": round(time.monotonic() - began, 1), **verifier.counts,
            "logs": str(work / "logs"),
        })
    finally:
        controller.stop()
        for service in services.values():
            service.terminate(20)
    return outcome


# ---------------------------------------------------------------------- output
def verdict_table(outcome: Outcome) -> Any:
    from rich.table import Table

    table = Table(title=f"chaos verdict: {'PASS' if outcome.ok else 'FAIL'}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in outcome.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
    return table


def write_results(outcome: Outcome) -> None:
    result: dict[str, object] = {"verdict": "PASS" if outcome.ok else "FAIL", **outcome.stats}
    result["checks"] = [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in outcome.checks]  # type: ignore[assignment]
    report("chaos", "Chaos run", {k: v for k, v in result.items() if k != "checks"})
    document = orjson.loads((RESULTS / "chaos.json").read_bytes())
    document["checks"] = result["checks"]
    document["timeline"] = outcome.timeline
    (RESULTS / "chaos.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    lines = ["", "## Verdict", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c.name} | {'ok' if c.ok else 'FAIL'} | {c.detail.replace('|', '/')} |" for c in outcome.checks]
    lines += ["", "## Timeline", "", "```", *outcome.timeline, "```", ""]
    with (RESULTS / "chaos.md").open("a") as md:
        md.write("\n".join(lines))


def quiet_client_logs() -> None:
    """The harness's own Kafka and S3 clients complain loudly while the broker or MinIO is down,
    which is the point of the run: keep their retries out of the progress output."""
    for name in ("aiokafka", "aiobotocore", "botocore", "s3fs", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(events: int = 500_000, kills: int = 20, minio_stop_s: float = 30.0, produce_s: float | None = None,
         seed: int = 7) -> None:
    from rich.console import Console

    console = Console(width=200)
    quiet_client_logs()
    plan = Plan(events=events, kills=kills, minio_stop_s=minio_stop_s, seed=seed, settle_timeout_s=300.0,
                produce_s=produce_s if produce_s else max(60.0, min(240.0, events / 2_000)))
    console.print(f"chaos plan: {plan}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services and the stack on SIGTERM too
    with throwaway_stack("chaos") as (stack, settings):
        outcome = asyncio.run(run_chaos(plan, stack, settings, say=lambda line: console.print(line, highlight=False)))
    console.print(verdict_table(outcome))
    write_results(outcome)
    if not outcome.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    import typer

    def cli(events: int = 500_000, kills: int = 20, minio_stop: float = 30.0,
            produce_s: float = typer.Option(0.0, help="seconds of production (0: events/2000, 60-240)"),
            seed: int = 7) -> None:
        """Run the chaos harness on a throw-away stack."""
        main(events, kills, minio_stop, produce_s or None, seed)

    typer.run(cli)
