"""``python -m bench [NAME] [--events N]``: run one benchmark, or all of them."""

from __future__ import annotations

from typing import Annotated

import typer

from bench import api, bronze, silver

BENCHMARKS = {"bronze": bronze.main, "silver": silver.main, "api": api.main}
app = typer.Typer(add_completion=False)


@app.command()
def run(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(BENCHMARKS)}, or all")] = "all",
    events: Annotated[int | None, typer.Option(help="events to send (default: the benchmark's own)")] = None,
) -> None:
    """Run benchmarks against a throw-away native stack; results go to bench/results/."""
    chosen = BENCHMARKS if name == "all" else {name: BENCHMARKS[name]}
    for bench in chosen.values():
        bench(events) if events else bench()


if __name__ == "__main__":
    app()
