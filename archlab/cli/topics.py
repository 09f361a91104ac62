"""``lab tail``: follow a topic as a person reads it, whatever bytes its records hold."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer
from rich.console import Console

from archlab.cli.common import console, load_settings
from archlab.core import names
from archlab.kafka.clients import make_consumer, topic_partitions

TopicKind = names.TopicKind
TOPIC_EXAMPLES = "e.g. " + ", ".join(
    names.topic("orders", kind) for kind in (TopicKind.RAW, TopicKind.SILVER, TopicKind.QUARANTINE, TopicKind.GOLD)
)


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


def tail(
    topic: Annotated[str, typer.Argument(help=TOPIC_EXAMPLES)],
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the oldest record")] = False,
    n: Annotated[int, typer.Option("-n", min=0, help="stop after N records; 0 = follow")] = 0,
    partition: Annotated[int | None, typer.Option(help="only this partition")] = None,
) -> None:
    """Follow a topic, printing each record's partition, offset, timestamp, key and value."""
    settings = load_settings()
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
