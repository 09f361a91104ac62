"""The issue's targets (#14) and a table of every headline figure next to its target.

The pipeline run's own figures come from its result; the steady case (``--steady``) and the API
benchmark (``bench/api.py``) run separately, so their latest result files are read in and dated."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson

from bench.common import RESULTS

PIPELINE_SERVICES = ("bronze_sink", "silver_refiner", "gold_aggregator", "api")
#: every process of `make up`, in the steady case
STEADY_PROCESSES = ("producer", *PIPELINE_SERVICES, "ui", "notebooks", "kafka", "minio")


@dataclass(frozen=True)
class Target:
    """One figure of a result (``key``) and, when it has one, the target it is held to."""

    label: str
    key: str
    compare: Callable[[float, float], bool] | None = None
    bound: float | None = None
    unit: str = ""

    def text(self) -> str:
        if self.compare is None or self.bound is None:
            return ""
        sign = "≤" if self.compare is operator.le else "≥"
        return f"{sign} {self.bound:g}{self.unit}"

    def verdict(self, value: object) -> str:
        if self.compare is None or self.bound is None or not isinstance(value, int | float):
            return ""
        return "met" if self.compare(float(value), self.bound) else "**missed**"


le, ge = operator.le, operator.ge
PIPELINE_TARGETS: tuple[Target, ...] = (
    Target("end-to-end events/s (backlog, first send -> gold complete)", "end_to_end_events_per_s"),
    Target("ratio end-to-end / produce-only", "ratio_end_to_end_to_produce_only", ge, 0.12),
    Target("ratio end-to-end / Quix Streams peer", "ratio_end_to_end_to_peer", ge, 3.0, "×"),
    Target("ratio end-to-end / identity topology (item 1)", "ratio_end_to_end_to_topology_limit"),
    Target("freshness p50 (send -> API)", "freshness_p50_s", unit=" s"),
    Target("freshness p95", "freshness_p95_s", le, 2.0, " s"),
    Target("freshness p99", "freshness_p99_s", le, 3.0, " s"),
    Target("CPU-µs per event, every process", "cpu_us_per_event[this run]"),
    *(Target(f"peak RSS MB under the backlog: {name}", f"peak_rss_mb[{name}]", le, 300, " MB")
      for name in PIPELINE_SERVICES),
)
STEADY_TARGETS: tuple[Target, ...] = (
    Target("steady CPU, every process (cores, demo rate 2 × 200/s)", "steady_cores[total]", le, 0.5),
    *(Target(f"steady CPU (cores): {name}", f"steady_cores[{name}]") for name in STEADY_PROCESSES),
    *(Target(f"steady peak RSS MB: {name}", f"steady_peak_rss_mb[{name}]", le, 200, " MB")
      for name in PIPELINE_SERVICES),
    *(Target(f"steady peak private MB (USS, without shared library pages): {name}", f"steady_peak_uss_mb[{name}]",
             unit=" MB") for name in PIPELINE_SERVICES),
)
API_TARGETS: tuple[Target, ...] = (Target("API aggregates p99 at 32 clients", "p99_ms", le, 50.0, " ms"),)
ENDPOINT_P99_MS = 1_000.0  # every other endpoint, whatever the lake holds


def _api_targets(result: Mapping[str, object]) -> tuple[Target, ...]:
    """The aggregates target, then one per endpoint the API benchmark timed (``<endpoint>: p99_ms``)."""
    endpoints = [key for key in result if key.endswith(": p99_ms") and "baseline" not in key]
    return (*API_TARGETS, *(Target(f"API p99: {key.removesuffix(': p99_ms')}", key, le, ENDPOINT_P99_MS, " ms")
                            for key in endpoints))


def latest(name: str) -> dict[str, object] | None:
    """``bench/results/<name>.json`` when a run left one."""
    path = RESULTS / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _rows(targets: tuple[Target, ...], result: Mapping[str, object], source: str) -> list[str]:
    rows = []
    for target in targets:
        value = result.get(target.key)
        if value is None:
            continue
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        rows.append(f"| {target.label} | {shown} | {target.text()} | {target.verdict(value)} | {source} |")
    return rows


def table(result: Mapping[str, object], benchmark: str) -> str:
    """Markdown: every headline figure of ``result`` (a ``pipeline`` or ``steady`` run) and of the
    latest other runs, each next to its target and whether it is met, with the load average."""
    load = f"load average {result.get('load_average_before')} before, {result.get('load_average_after')} after"
    sections = [("pipeline", PIPELINE_TARGETS), ("steady", STEADY_TARGETS), ("api", API_TARGETS)]
    rows = []
    for name, targets in sections:
        if name == benchmark:
            rows += _rows(targets, result, "this run")
        elif (other := latest(name)) is not None:
            targets = _api_targets(other) if name == "api" else targets
            its_load = f", load {other['load_average_before']}" if "load_average_before" in other else ""
            rows += _rows(targets, other, f"`{name}` run of {other.get('at', '?')}{its_load}")
    header = ["## Figures against their targets (issue #14)", "",
              f"This run ({benchmark}, {os.cpu_count()} cores): {load}.", "",
              "| figure | measured | target | | from |", "|---|---|---|---|---|"]
    return "\n".join([*header, *rows, ""])
