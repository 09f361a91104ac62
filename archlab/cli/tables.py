"""``lab tables`` and ``lab history``: the lake's Delta tables and what each commit did, read from
the tables' logs alone (no data file is read, so both answer at once however large the lake)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from archlab.cli.common import console, load_settings
from archlab.core.settings import Settings
from archlab.lake.query import lake_tables
from archlab.lake.tables import Tables, TableStats

HISTORY_VALUE_CHARS = 60
"""A parameter (a merge predicate, say) is cut to this many characters in the table view (--json has it whole)."""


async def collect_tables(settings: Settings) -> list[TableStats]:
    """Every table of the configured datasets with its figures from the log, read concurrently."""
    tables = Tables.from_settings(settings)
    paths = await asyncio.to_thread(lake_tables, tables, settings.datasets)
    found = await asyncio.gather(*(asyncio.to_thread(tables.stats, path) for path in paths))
    return [stats for stats in found if stats is not None]


def as_json(stats: TableStats) -> dict[str, Any]:
    """A table's figures keyed by name, ``last_commit`` as ISO-8601 (UTC)."""
    return {**asdict(stats), "last_commit": stats.last_commit.isoformat() if stats.last_commit else None}


def tables_view(found: list[TableStats], title: str = "Tables") -> Table:
    """The figures of ``found`` as a rich table (also ``lab status``'s lake part)."""
    view = Table("table", "version", "files", "rows", "size", "last commit (UTC)", title=title)
    for stats in found:
        stamp = f"{stats.last_commit:%Y-%m-%d %H:%M:%S}" if stats.last_commit else "-"
        view.add_row(stats.path, str(stats.version), f"{stats.files:,}", f"{stats.rows:,}", decimal(stats.bytes), stamp)
    return view


def tables(
    json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every Delta table on the lake: version, data files, rows, size and last commit."""
    found = asyncio.run(collect_tables(load_settings()))
    if json_output:
        typer.echo(orjson.dumps([as_json(stats) for stats in found], option=orjson.OPT_INDENT_2).decode())
        return
    Console().print(tables_view(found))


def _summary(values: dict[str, Any] | None) -> str:
    """``key=value`` pairs, each value shortened, empty values left out."""
    pairs = []
    for key, value in (values or {}).items():
        if value in (None, "", [], "[]", {}):
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        pairs.append(f"{key}={text if len(text) <= HISTORY_VALUE_CHARS else text[:HISTORY_VALUE_CHARS - 1] + '…'}")
    return " ".join(pairs)


def history(
    table: Annotated[str, typer.Argument(help="a table path as `lab tables` lists it, e.g. silver/orders")],
    limit: Annotated[int, typer.Option(min=1, help="newest commits shown")] = 20,
    json_output: Annotated[bool, typer.Option("--json", help="print the commits as JSON, whole")] = False,
) -> None:
    """A table's commits, newest first: version, time, operation, its parameters and metrics."""
    delta = Tables.from_settings(load_settings()).open(table)
    if delta is None:
        console.print(f"[red]no table {table!r} on the lake; `lab tables` lists them[/red]")
        raise typer.Exit(2)
    commits = delta.history(limit)
    if json_output:
        typer.echo(orjson.dumps(commits, option=orjson.OPT_INDENT_2).decode())
        return
    view = Table("version", "time (UTC)", "operation", "parameters", "metrics", title=f"History of {table}")
    for commit in commits:
        moment = datetime.fromtimestamp(commit["timestamp"] / 1000, UTC) if commit.get("timestamp") else None
        view.add_row(str(commit.get("version", "")), f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-",
                     commit.get("operation", ""), _summary(commit.get("operationParameters")),
                     _summary(commit.get("operationMetrics")))
    Console().print(view)
