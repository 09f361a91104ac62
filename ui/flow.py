"""The medallion as one picture: raw → bronze, silver / quarantine → gold, each box and arrow with its
live figures from ``GET /v1/pipeline`` (and the quarantine rate from the quality endpoint).

:func:`flow` turns the API's answers into plain data (tested without a browser, and the browser test
compares the page with it); :func:`flow_html` draws it. Colour marks only what needs attention: a
stalled consumer (red), a consumer far behind or a high quarantine rate (amber), a late figure (grey).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from archlab.core.names import dataset_of
from ui import format as fmt

LAG_ATTENTION = 1_000
"""Records behind from which a consumer is drawn amber."""
QUARANTINE_ATTENTION = 0.05
"""Share of quarantined records from which the quarantine box is drawn amber."""


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    text: str


@dataclass(frozen=True)
class Node:
    """A box (a topic and its table) or an arrow (the services that read a topic); ``level`` is ``""``
    when all is well, else ``alert``, ``warn`` or ``late``."""

    key: str
    title: str
    figures: list[Figure]
    level: str = ""


@dataclass(frozen=True)
class Flow:
    raw: Node
    first_hop: Node
    landed: list[Node]  # bronze, silver, quarantine
    second_hop: Node
    gold: Node


def flow(pipeline: dict[str, Any], dataset: str, quarantine_rate: float | None, quality_late: bool) -> Flow:
    """The picture of ``dataset`` in the pipeline monitor's sample ``pipeline``."""
    topics = {t["layer"]: t for t in pipeline["topics"] if t["dataset"] == dataset}
    tables = [t for t in pipeline["lake"] if t["dataset"] == dataset]
    layer_rows = {layer: sum(t["rows"] for t in tables if t["layer"] == layer) for layer in ("bronze", "silver",
                                                                                              "quarantine", "gold")}
    raw = Node("raw", "raw topic", [Figure("raw.rate", "in", fmt.rate(_rate(topics, "raw"))),
                                    Figure("raw.records", "records", fmt.number(_end(topics, "raw")))])
    bronze = Node("bronze", "bronze table", [Figure("bronze.rows", "rows", fmt.number(layer_rows["bronze"]))])
    silver = Node("silver", "silver", [Figure("silver.rate", "topic", fmt.rate(_rate(topics, "silver"))),
                                       Figure("silver.rows", "rows", fmt.number(layer_rows["silver"]))])
    share = fmt.percent(quarantine_rate) + (" (late)" if quality_late else "")
    quarantine_level = "late" if quality_late else (
        "warn" if quarantine_rate is not None and quarantine_rate >= QUARANTINE_ATTENTION else "")
    quarantine = Node("quarantine", "quarantine", [
        Figure("quarantine.rows", "rows", fmt.number(layer_rows["quarantine"])),
        Figure("quarantine.share", "share, last hour", share)], quarantine_level)
    gold_tables = sorted((t for t in tables if t["layer"] == "gold"), key=lambda t: t["table"])
    gold = Node("gold", "gold", [
        Figure("gold.rate", "topic", fmt.rate(_rate(topics, "gold"))),
        *(Figure(f"gold.{t['table'].rpartition('/')[2]}.rows", t["table"].rpartition("/")[2],
                 f"{fmt.number(t['rows'])} rows") for t in gold_tables)])
    return Flow(raw, _readers(pipeline, dataset, "raw"), [bronze, silver, quarantine],
                _readers(pipeline, dataset, "silver"), gold)


def _rate(topics: dict[str, dict[str, Any]], layer: str) -> float | None:
    return topics[layer]["events_per_s"] if layer in topics else None


def _end(topics: dict[str, dict[str, Any]], layer: str) -> int | None:
    return topics[layer]["end_offset"] if layer in topics else None


def _readers(pipeline: dict[str, Any], dataset: str, layer: str) -> Node:
    """The arrow out of a topic: each service reading it, with its records/s and lag on that topic."""
    figures, level = [], ""
    for service in pipeline["services"]:
        lag, rates, stalled = 0, [], False
        reads = False
        for group in service["groups"]:
            for topic in group["topics"]:
                if topic["layer"] == layer and dataset_of(topic["topic"]) == dataset:
                    reads = True
                    lag += topic["lag"]
                    rates += [] if topic["events_per_s"] is None else [topic["events_per_s"]]
                    stalled |= group["health"] == "stalled"
        if not reads:
            continue
        name = service["service"]
        figures += [Figure(f"{layer}.{name}.rate", name, fmt.rate(sum(rates) if rates else None)),
                    Figure(f"{layer}.{name}.lag", "lag", fmt.number(lag))]
        level = "alert" if stalled else ("warn" if lag >= LAG_ATTENTION and level != "alert" else level)
    if not figures:
        figures = [Figure(f"{layer}.readers", "readers", "none yet")]
    return Node(f"{layer}-readers", f"read from {layer}", figures, level)


def _node_html(node: Node, arrow: bool = False) -> str:
    rows = "".join(f'<div class="fig"><span class="k">{escape(f.label)}</span>'
                   f'<span class="v" data-figure="{escape(f.key)}">{escape(f.text)}</span></div>' for f in node.figures)
    kind = "arrow" if arrow else "box"
    return (f'<div class="{kind} {node.level}" data-node="{escape(node.key)}"><div class="t">{escape(node.title)}'
            f'</div>{rows}</div>')


def flow_html(picture: Flow) -> str:
    """The picture as self-contained HTML and CSS (no script), a row of columns that wraps on narrow pages."""
    landed = "".join(_node_html(n) for n in picture.landed)
    return f"""<style>
.medallion {{display:flex; align-items:center; gap:.4rem; font-size:.85rem; flex-wrap:wrap}}
.medallion .col {{display:flex; flex-direction:column; gap:.4rem; flex:1 1 0; min-width:9rem}}
.medallion .box {{border:1px solid #c9ccd3; border-radius:.5rem; padding:.35rem .6rem; background:#fafbfc}}
.medallion .arrow {{flex:0 1 12rem; min-width:9rem; padding:.2rem 1rem .2rem .5rem; border-bottom:2px solid #8a8f98;
  position:relative; color:#31333f}}
.medallion .arrow::after {{content:"▶"; position:absolute; right:0; bottom:-.62rem; color:#8a8f98}}
.medallion .t {{font-weight:600; margin-bottom:.15rem; overflow-wrap:anywhere}}
.medallion .fig {{display:flex; justify-content:space-between; gap:.5rem; flex-wrap:wrap}}
.medallion .k {{color:#555a64; overflow-wrap:anywhere}}
.medallion .v {{font-variant-numeric:tabular-nums; white-space:nowrap}}
.medallion .warn {{border-color:#e0a100; background:#fff7e0}}
.medallion .alert {{border-color:#d93025; background:#fde8e6}}
.medallion .late {{border-style:dashed; color:#6b6f76}}
.medallion .arrow.warn, .medallion .arrow.alert {{background:none; border-bottom-width:3px}}
</style>
<div class="medallion">
<div class="col">{_node_html(picture.raw)}</div>
{_node_html(picture.first_hop, arrow=True)}
<div class="col">{landed}</div>
{_node_html(picture.second_hop, arrow=True)}
<div class="col">{_node_html(picture.gold)}</div>
</div>"""
