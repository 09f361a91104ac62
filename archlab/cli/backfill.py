"""``lab backfill``: rebuild silver, quarantine and gold of a time range from bronze with the contract as it
is now (after a contract change, say), on DuckDB (embedded, the default) or Spark; see :mod:`archlab.batch`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from archlab.batch.backfill import Report, backfill, contract_of, plan, require_bronze
from archlab.batch.engines import Engine
from archlab.batch.span import BackfillError, parse_moment
from archlab.cli.common import console
from archlab.core.errors import UserError
from archlab.core.settings import Settings, load_settings
from archlab.lake.spark import SparkSettings
from archlab.lake.tables import Tables


class BackfillSettings(Settings, SparkSettings):
    """Every ``lab`` setting (the contracts' folder among them) plus Spark's (``LAB_SPARK_MASTER``)."""


def _summary(report: Report) -> Table:
    view = Table("table", "version", "rows in range", title=f"Backfilled {report.dataset} {report.span.describe()}")
    for replaced in report.replaced:
        view.add_row(replaced.path, str(replaced.version), f"{replaced.rows:,}")
    return view


def run_backfill(
    dataset: Annotated[str, typer.Option(help="the dataset whose tables are rebuilt")],
    start: Annotated[str | None, typer.Option("--from", help="range start, ISO-8601 (UTC unless an offset is "
                                                             "given); default: the beginning of history")] = None,
    end: Annotated[str | None, typer.Option("--to", help="range end (excluded); default and limit: the stream's "
                                                         "final horizon (windows still open are left to it)")] = None,
    engine: Annotated[Engine, typer.Option(help="duckdb: embedded; spark: local, or LAB_SPARK_MASTER")] = "duckdb",
) -> None:
    """Rebuild silver, quarantine and gold of an event-time range from bronze with the current contract."""
    try:
        settings = load_settings(BackfillSettings)
        contract = contract_of(settings.contracts_dir, dataset)
        start_ms = None if start is None else parse_moment(start, "--from")
        end_ms = None if end is None else parse_moment(end, "--to")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise BackfillError(f"--from {start} is not before --to {end}")
        tables = Tables.from_settings(settings)
        require_bronze(tables, dataset)
        span = plan(tables, contract, start_ms, end_ms)
        console.print(f"backfilling {dataset} {span.describe()} on {engine} (contract version {contract.version})")
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("bronze rows"), TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(f"rebuild on {engine}", total=None)
            report = backfill(settings, settings.contracts_dir, dataset, span, engine,
                              progress=lambda rows: bar.advance(task, rows),
                              total=lambda rows: bar.update(task, total=rows))
    except UserError as exc:
        console.print(f"[red]{exc.label}: {exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(_summary(report))
    startup = f", engine start {report.startup_s:.1f} s" if report.startup_s else ""
    console.print(f"rebuilt {report.bronze_rows:,} bronze rows (version {report.bronze_version}) in "
                  f"{report.rebuild_s:.1f} s ({report.rows_per_s:,.0f} rows/s){startup}; committed in "
                  f"{report.commit_s:.1f} s")
