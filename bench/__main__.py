"""``python -m bench [NAME] [--events N]``: run one benchmark, or all of them (``chaos`` only by name:
``python -m bench chaos``; more options with ``python -m bench.chaos --help``)."""

from __future__ import annotations

from typing import Annotated

import typer

from bench import api, bronze, chaos, gold, silver

BENCHMARKS = {"bronze": bronze.main, "silver": silver.main, "gold": gold.main, "api": api.main}
ON_DEMAND = {"chaos": chaos.main}  # long runs with failures injected: not part of `all`
app = typer.Typer(add_completion=False)


@app.command()
def run(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join([*BENCHMARKS, *ON_DEMAND])}, or all")] = "all",
    events: Annotated[int | None, typer.Option(help="events to send (default: the benchmark's own)")] = None,
) -> None:
    """Run benchmarks against a throw-away native stack; results go to bench/results/."""
    chosen = BENCHMARKS if name == "all" else {name: {**BENCHMARKS, **ON_DEMAND}[name]}
    for bench in chosen.values():
        bench(events) if events else bench()


if __name__ == "__main__":
    app()
