"""``lab status``: where the pipeline stands, in about a second however much the lake holds.

Kafka answers with end offsets and each group's committed offsets; the lake with each Delta table's
log (``lab tables``' figures: version, files, exact rows from the add actions, bytes, last commit),
so no data file is read. Both are asked at the same time.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
import typer
from aiokafka import TopicPartition
from rich.console import Console
from rich.table import Table

from archlab.cli.common import load_settings
from archlab.cli.tables import as_json, collect_tables, tables_view
from archlab.core.names import TopicKind, topic
from archlab.core.settings import Settings
from archlab.kafka.lag import LagProbe, caught_up, lag_of
from archlab.lake.tables import TableStats

STATUS_TOPICS = (TopicKind.RAW, TopicKind.SILVER, TopicKind.QUARANTINE, TopicKind.DQ, TopicKind.GOLD)
"""The topics a dataset's records pass through (the services' internal changelogs are left out)."""


async def collect_status(settings: Settings) -> tuple[dict[str, int], dict[str, dict[str, dict[str, Any]]],
                                                      list[TableStats]]:
    """Per topic its end offsets, per consumer group and topic its lag, per lake table its figures."""
    sizing = asyncio.ensure_future(collect_tables(settings))
    topics, groups = await _kafka_status(settings)
    return topics, groups, await sizing


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
    as_json_output: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Per consumer group lag, per topic end offsets, per lake table version, files, rows and size."""
    topic_ends, groups, lake = asyncio.run(collect_status(load_settings()))
    if as_json_output:
        report = {"topics": topic_ends, "consumer_groups": groups, "lake": {s.path: as_json(s) for s in lake}}
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    topics = Table("topic", "end offsets (sum; transaction markers count too)", title="Topics")
    for name, end in topic_ends.items():
        topics.add_row(name, f"{end:,}")
    lags = Table("consumer group", "topic", "lag", "caught up", title="Consumer groups",
                 caption="a caught-up group lags one commit marker per partition of a transactional topic")
    for group, by_topic in groups.items():
        for name, lag in by_topic.items():
            lags.add_row(group, name, f"{lag['lag']:,}", "yes" if lag["caught_up"] else "no")
    out = Console()
    for view in (topics, lags, tables_view(lake, title="Lake")):
        out.print(view)
