"""``lab status``: where the pipeline stands, in about a second however much the lake holds.

Kafka answers with end offsets and each group's committed offsets; the lake with one listing per
table and the Parquet footers (``table_stats``), so no object is ever read whole. Both are asked at
the same time, and footers only for ``FOOTER_BUDGET_S``: the rows of a table whose footers were not
all read by then are estimated from its bytes and marked so (``--exact`` reads every footer).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Annotated, Any

import orjson
import typer
from aiokafka import TopicPartition
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from archlab.cli.common import load_settings
from archlab.core.names import LAYERS, TopicKind, table_path, topic
from archlab.core.settings import Settings
from archlab.kafka.lag import LagProbe, caught_up, lag_of
from archlab.lake.query import table_stats
from archlab.lake.store import Lake

STATUS_TOPICS = (TopicKind.RAW, TopicKind.SILVER, TopicKind.QUARANTINE, TopicKind.DQ, TopicKind.GOLD)
"""The topics a dataset's records pass through (the services' internal changelogs are left out)."""
FOOTER_BUDGET_S = 0.5
"""How long footers are read for before the remaining rows are estimated: with Python's start and the
broker's answers, `lab status` stays under two seconds."""


async def collect_status(settings: Settings, *, exact: bool = False) -> dict[str, Any]:
    """Per topic its end offsets, per consumer group and topic its lag, per lake table its size."""
    lake = Lake.from_settings(settings)
    tables = [(layer, dataset) for dataset in settings.datasets for layer in LAYERS]
    deadline = None if exact else time.monotonic() + FOOTER_BUDGET_S
    sizing = asyncio.gather(*(asyncio.to_thread(table_stats, lake, layer, dataset, deadline)
                              for layer, dataset in tables))
    topics, groups = await _kafka_status(settings)
    sizes = await sizing
    return {
        "topics": topics,
        "consumer_groups": groups,
        "lake": {table_path(layer, dataset): asdict(stats) for (layer, dataset), stats in zip(tables, sizes, strict=True)},
    }


async def _kafka_status(settings: Settings) -> tuple[dict[str, int], dict[str, dict[str, dict[str, Any]]]]:
    """End offsets summed per topic; lag per group and topic, for the groups that committed on them."""
    names = [topic(dataset, kind) for dataset in settings.datasets for kind in STATUS_TOPICS]
    async with LagProbe(settings) as probe:
        ends = await probe.end_offsets(names)
        group_ids = await probe.groups()
        committed = await asyncio.gather(*(probe.committed(group, names) for group in group_ids))
    topic_ends: dict[str, int] = {}
    for tp, end in ends.items():
        topic_ends[tp.topic] = topic_ends.get(tp.topic, 0) + end
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for group, offsets in zip(group_ids, committed, strict=True):
        by_topic: dict[str, dict[TopicPartition, int]] = {}
        for tp, behind in lag_of({tp: ends[tp] for tp in offsets if tp in ends}, offsets).items():
            by_topic.setdefault(tp.topic, {})[tp] = behind
        if by_topic:
            groups[group] = {name: {"lag": sum(lag.values()), "caught_up": caught_up(lag)}
                             for name, lag in sorted(by_topic.items())}
    return topic_ends, groups


def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="read every footer, however long it takes")] = False,
) -> None:
    """Per consumer group lag, per topic end offsets, objects, bytes and rows per lake table."""
    report = asyncio.run(collect_status(load_settings(), exact=exact))
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    topics = Table("topic", "end offsets (sum; transaction markers count too)", title="Topics")
    for name, end in report["topics"].items():
        topics.add_row(name, f"{end:,}")
    groups = Table("consumer group", "topic", "lag", "caught up", title="Consumer groups",
                   caption="a caught-up group lags one commit marker per partition of a transactional topic")
    for group, lags in report["consumer_groups"].items():
        for name, lag in lags.items():
            groups.add_row(group, name, f"{lag['lag']:,}", "yes" if lag["caught_up"] else "no")
    estimated = not all(figures["rows_exact"] for figures in report["lake"].values())
    lake = Table("table", "objects", "size", "rows", title="Lake", caption=(
        f"≈ estimated from the bytes: not every footer was read within {FOOTER_BUDGET_S:g} s (--exact)"
        if estimated else None))
    for name, figures in report["lake"].items():
        rows = f"{'' if figures['rows_exact'] else '≈'}{figures['rows']:,}"
        lake.add_row(name, f"{figures['objects']:,}", decimal(figures["bytes"]), rows)
    out = Console()
    for table in (topics, groups, lake):
        out.print(table)
