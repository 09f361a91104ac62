"""The ``lab`` command: produce, replay, tail and inspect the running lakehouse.

It reads the same ``LAB_*`` variables as the services, and also the project's ``.env`` file when
present, so it works next to ``make up`` without exporting anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from archlab.contract import ContractError, load_contract
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.native import infra_app
from archlab.devstack.supervisor import down, up
from archlab.ingest.generators import DirtyRates, available_datasets
from archlab.ingest.produce import Summary, produce_synthetic, replay_file
from archlab.kafka.clients import make_consumer, topic_partitions
from archlab.kafka.topics import ensure_topics
from archlab.lake.query import count_rows
from archlab.lake.store import LAYERS, Lake, ensure_bucket

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(infra_app, name="infra", help="Run the native Kafka and MinIO (make infra-up / infra-down).")
app.command(help="Start Kafka, MinIO and every service in the foreground; Ctrl-C stops everything.")(up)
app.command(help="Stop everything `lab up` started.")(down)
console = Console(stderr=True)
LAYER_TOPICS = ("raw", "silver", "quarantine", "gold")


def _settings() -> Settings:
    env_file = PROJECT_ROOT / ".env"
    try:
        return Settings(_env_file=env_file if env_file.exists() else None)  # type: ignore[call-arg]
    except Exception as exc:  # pydantic's message names every missing or invalid variable
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


class _RateColumn(ProgressColumn):
    """Events per second, blank until rich has measured a speed (it is None at first)."""

    def render(self, task: Task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:>8,.0f} events/s")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _print_summary(summary: Summary) -> None:
    console.print(summary.line())
    if summary.failed:
        raise typer.Exit(1)


@infra_app.command("init")
def infra_init() -> None:
    """Create the bucket and every dataset's topics (idempotent)."""
    settings = _settings()
    ensure_bucket(settings)
    asyncio.run(ensure_topics(settings))
    console.print(f"bucket {settings.bucket!r} and topics of {', '.join(settings.datasets)} are ready")


@app.command()
def produce(
    dataset: Annotated[str, typer.Option(help=f"one of: {', '.join(available_datasets())}")] = "orders",
    count: Annotated[int, typer.Option(min=0, help="events to send; 0 = until --duration or Ctrl-C")] = 10_000,
    rate: Annotated[float, typer.Option(min=0, help="events per second; 0 = as fast as possible")] = 0.0,
    seed: Annotated[int, typer.Option(help="same seed, same events")] = 42,
    duration: Annotated[float, typer.Option(min=0, help="stop after this many seconds; 0 = no limit")] = 0.0,
    clean: Annotated[bool, typer.Option("--clean", help="send no injected dirty records")] = False,
) -> None:
    """Send a realistic synthetic event stream (with a few % of dirty records) to <dataset>.raw."""
    settings = _settings()
    dirty = DirtyRates.clean() if clean else None

    async def run() -> Summary:
        with _progress() as bar:
            task = bar.add_task(f"{dataset}.raw", total=count or None)
            return await produce_synthetic(
                settings, dataset, count=count, rate=rate, seed=seed, duration=duration, dirty=dirty,
                progress=lambda n: bar.advance(task, n),
            )

    _print_summary(asyncio.run(run()))


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a .csv, .jsonl or .parquet file")],
    dataset: Annotated[str, typer.Option(help="dataset whose contract describes the rows")] = "orders",
    speed: Annotated[float, typer.Option(min=0, help="x event-time speed; 0 = as fast as possible")] = 0.0,
) -> None:
    """Send the rows of a file to <dataset>.raw in file order, keyed by the contract key."""
    settings = _settings()
    try:
        contract = load_contract(settings.contracts_dir / f"{dataset}.yaml")
    except ContractError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc

    async def run() -> Summary:
        with _progress() as bar:
            task = bar.add_task(f"{file.name} -> {dataset}.raw", total=None)
            return await replay_file(
                settings, contract, file, speed=speed,
                progress=lambda n: bar.advance(task, n), total=lambda n: bar.update(task, total=n),
            )

    _print_summary(asyncio.run(run()))


def render_value(value: bytes | None) -> str:
    """Pretty JSON when the value is JSON, the text when it is UTF-8, else base64."""
    if value is None:
        return "null"
    try:
        return json.dumps(orjson.loads(value), indent=2, ensure_ascii=False)
    except orjson.JSONDecodeError:
        pass
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="e.g. orders.raw, orders.silver, orders.quarantine, orders.gold")],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the oldest record")] = False,
    n: Annotated[int, typer.Option("-n", min=0, help="stop after N records; 0 = follow")] = 0,
    partition: Annotated[int | None, typer.Option(help="only this partition")] = None,
) -> None:
    """Follow a topic, printing each record's partition, offset, timestamp, key and value."""
    settings = _settings()
    out = Console()

    async def run() -> None:
        consumer = make_consumer(settings, group_id=None, isolation_level="read_committed")
        await consumer.start()
        try:
            try:
                tps = [tp for tp in await topic_partitions(settings, topic) if partition in (None, tp.partition)]
            except LookupError as exc:
                console.print(f"[red]{exc}[/red]")
                raise typer.Exit(2) from exc
            consumer.assign(tps)
            await (consumer.seek_to_beginning(*tps) if from_beginning else consumer.seek_to_end(*tps))
            shown = 0
            while n == 0 or shown < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        moment = datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat()
                        key = render_value(record.key) if record.key is not None else "-"
                        out.print(f"[cyan]p{record.partition} @{record.offset}[/cyan] {moment} key={key}")
                        out.print(render_value(record.value), markup=False, highlight=False)
                        shown += 1
                        if n and shown >= n:
                            return
        finally:
            await consumer.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


async def collect_status(settings: Settings) -> dict[str, object]:
    """Consumer group lag, topic end offsets and lake objects/rows per layer."""
    topics = [f"{d}.{layer}" for d in settings.datasets for layer in LAYER_TOPICS]
    consumer = make_consumer(settings, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        tps = [
            TopicPartition(d["topic"], p["partition"])
            for d in described if not d.get("error_code") for p in d.get("partitions", ())
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        topic_ends: dict[str, int] = {}
        for tp, end in ends.items():
            topic_ends[tp.topic] = topic_ends.get(tp.topic, 0) + end
        groups = {}
        for group_id, _protocol in await admin.list_consumer_groups():
            committed = await admin.list_consumer_group_offsets(group_id)
            lag = {}
            for tp, meta in committed.items():
                if tp in ends:
                    lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - meta.offset)
            if lag:
                groups[group_id] = lag
    finally:
        await consumer.stop()
        await admin.close()
    lake = Lake.from_settings(settings)
    layers = {}
    for layer in LAYERS:
        for dataset in settings.datasets:
            objects, rows = await asyncio.to_thread(count_rows, lake, layer, dataset)
            layers[f"{layer}/{dataset}"] = {"objects": objects, "rows": rows}
    return {"topics": topic_ends, "consumer_groups": groups, "lake": layers}


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False) -> None:
    """Per consumer group lag, per topic end offsets, objects and rows per lake layer."""
    report = asyncio.run(collect_status(_settings()))
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    out = Console()
    topics = Table("topic", "end offsets (sum; transaction markers count too)", title="Topics")
    for topic, end in report["topics"].items():  # type: ignore[union-attr]
        topics.add_row(topic, f"{end:,}")
    groups = Table("consumer group", "topic", "lag", title="Consumer groups")
    for group, lags in report["consumer_groups"].items():  # type: ignore[union-attr]
        for topic, lag in lags.items():
            groups.add_row(group, topic, f"{lag:,}")
    lake = Table("layer/dataset", "objects", "rows", title="Lake")
    for name, figures in report["lake"].items():  # type: ignore[union-attr]
        lake.add_row(name, f"{figures['objects']:,}", f"{figures['rows']:,}")
    for table in (topics, groups, lake):
        out.print(table)


if __name__ == "__main__":
    app()
