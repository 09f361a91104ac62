"""``lab produce`` and ``lab replay``: send events to a dataset's raw topic, with a live progress bar."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
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
from rich.text import Text

from archlab.cli.common import console, load_settings
from archlab.contract import ContractError, load_contract
from archlab.core.names import raw_topic
from archlab.ingest.generators import DirtyRates, StreamShape, available_datasets
from archlab.ingest.produce import Summary, produce_synthetic, replay_file


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


def produce(
    dataset: Annotated[str, typer.Option(help=f"one of: {', '.join(available_datasets())}")] = "orders",
    count: Annotated[int, typer.Option(min=0, help="events to send; 0 = until --duration or Ctrl-C")] = 10_000,
    rate: Annotated[float, typer.Option(min=0, help="events per second; 0 = as fast as possible")] = 0.0,
    seed: Annotated[int, typer.Option(help="same seed, same events")] = 42,
    duration: Annotated[float, typer.Option(min=0, help="stop after this many seconds; 0 = no limit")] = 0.0,
    clean: Annotated[bool, typer.Option("--clean", help="send no injected dirty records")] = False,
    out_of_order_hours: Annotated[float, typer.Option(
        min=0, max=720, help="move each event's time back by up to this many hours (out of order)")] = 0.0,
    cardinality: Annotated[float, typer.Option(
        min=0.01, max=200, help="orders: times more distinct products and customers")] = 1.0,
) -> None:
    """Send a realistic synthetic event stream (with a few % of dirty records) to <dataset>.raw."""
    settings = load_settings()
    dirty = DirtyRates.clean() if clean else None
    shape = StreamShape(out_of_order_ms=round(out_of_order_hours * 3_600_000), cardinality=cardinality)

    async def run() -> Summary:
        with _progress() as bar:
            task = bar.add_task(raw_topic(dataset), total=count or None)
            return await produce_synthetic(
                settings, dataset, count=count, rate=rate, seed=seed, duration=duration, dirty=dirty, shape=shape,
                progress=lambda n: bar.advance(task, n),
            )

    _print_summary(asyncio.run(run()))


def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a .csv, .jsonl or .parquet file")],
    dataset: Annotated[str, typer.Option(help="dataset whose contract describes the rows")] = "orders",
    speed: Annotated[float, typer.Option(min=0, help="x event-time speed; 0 = as fast as possible")] = 0.0,
) -> None:
    """Send the rows of a file to <dataset>.raw in file order, keyed by the contract key."""
    settings = load_settings()
    try:
        contract = load_contract(settings.contracts_dir / f"{dataset}.yaml")
    except ContractError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc

    async def run() -> Summary:
        with _progress() as bar:
            task = bar.add_task(f"{file.name} -> {raw_topic(dataset)}", total=None)
            return await replay_file(
                settings, contract, file, speed=speed,
                progress=lambda n: bar.advance(task, n), total=lambda n: bar.update(task, total=n),
            )

    _print_summary(asyncio.run(run()))
