"""``python -m bench [NAME] [--events N]``: the end-to-end benchmark (``pipeline``, the default), one
per-service benchmark, ``services`` (all of those) or ``all`` (``chaos``, ``faust``, ``year`` and ``backfill`` only by name:
``python -m bench chaos``; more options with ``python -m bench.chaos --help``). ``pipeline --steady``: the
whole system at its demo rate instead (CPU and RSS per process, ``bench/steady.py``)."""

from __future__ import annotations

from typing import Annotated

import typer

from bench import (
    api,
    backfill,
    bronze,
    chaos,
    faust_limit,
    gold,
    gold_cardinality,
    observer,
    pipeline,
    silver,
    steady,
    year,
)

SERVICES = {"bronze": bronze.main, "silver": silver.main, "gold": gold.main,
            "gold_cardinality": gold_cardinality.main, "api": api.main, "observer": observer.main}
BENCHMARKS = {"pipeline": pipeline.main, **SERVICES}
# chaos: long, failures injected; faust: a why; year: a replayed year's files and count(*); backfill: starts Spark
ON_DEMAND = {"chaos": chaos.main, "faust": faust_limit.main, "year": year.main, "backfill": backfill.main}
app = typer.Typer(add_completion=False)


@app.command()
def run(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join([*BENCHMARKS, *ON_DEMAND])}, services, or all")] = "pipeline",
    events: Annotated[int | None, typer.Option(help="events to send (default: the benchmark's own)")] = None,
    freshness_seconds: Annotated[float, typer.Option(help="pipeline: length of the freshness phase (0: none)")] = 60.0,
    freshness_rate: Annotated[float, typer.Option(help="pipeline: events/s of the freshness phase, e.g. the demo's "
                                                  "200 (0: half the measured end-to-end rate)")] = 0.0,
    peer: Annotated[bool, typer.Option(help="pipeline: run the Quix Streams peer")] = True,
    topology: Annotated[bool, typer.Option(help="pipeline: run the identity topology (the topology's own limit)")] = True,
    steady_case: Annotated[bool, typer.Option("--steady", help="pipeline: the whole system at the demo rate "
                                              "(make up), CPU and RSS per process, instead of the backlog")] = False,
    steady_seconds: Annotated[float, typer.Option(help="--steady: seconds measured")] = 300.0,
    steady_warmup: Annotated[float, typer.Option(help="--steady: seconds after start-up not measured")] = 30.0,
) -> None:
    """Run benchmarks against a throw-away native stack; results go to bench/results/ (pipeline and
    --steady also append to bench/results/history.csv)."""
    if steady_case:
        steady.main(steady_seconds, steady_warmup)
        return
    chosen = {"all": BENCHMARKS, "services": SERVICES}.get(name) or {name: {**BENCHMARKS, **ON_DEMAND}[name]}
    for key, bench in chosen.items():
        options = ({"freshness_s": freshness_seconds, "peer": peer, "topology": topology,
                    "freshness_rate": freshness_rate} if key == "pipeline" else {})
        bench(events, **options) if events else bench(**options)


if __name__ == "__main__":
    app()
