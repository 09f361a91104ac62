"""The benchmarks' memory: one row per ``make bench`` (and per ``--steady`` run) appended to
``bench/results/history.csv`` (committed, unlike the other results) and a plot of every row, so
that a regression shows as a step. A column added later is added to the file's header, old rows
keep their values and stay blank in it; no row is ever changed or removed."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime

from archlab.core.settings import PROJECT_ROOT
from bench.common import RESULTS
from bench.targets import PIPELINE_SERVICES, STEADY_PROCESSES

HISTORY = RESULTS / "history.csv"
PLOT = RESULTS / "history.png"
OTHERS = ("kafka", "minio")

#: history column -> key of a benchmark's result
FIGURES: dict[str, str] = {
    "events": "events",
    "end_to_end_events_per_s": "end_to_end_events_per_s",
    "produce_only_events_per_s": "produce_only_events_per_s",
    "ratio_to_produce_only": "ratio_end_to_end_to_produce_only",
    "topology_limit_events_per_s": "topology_limit_events_per_s",
    "ratio_to_topology_limit": "ratio_end_to_end_to_topology_limit",
    "peer_events_per_s": "peer_events_per_s",
    "ratio_to_peer": "ratio_end_to_end_to_peer",
    "freshness_p50_s": "freshness_p50_s",
    "freshness_p95_s": "freshness_p95_s",
    "freshness_p99_s": "freshness_p99_s",
    "cpu_us_per_event": "cpu_us_per_event[this run]",
    **{f"peak_rss_mb_{name}": f"peak_rss_mb[{name}]" for name in (*PIPELINE_SERVICES, *OTHERS)},
    "steady_seconds": "steady_seconds",
    "steady_cores_total": "steady_cores[total]",
    **{f"steady_cores_{name}": f"steady_cores[{name}]" for name in STEADY_PROCESSES},
    **{f"steady_peak_rss_mb_{name}": f"steady_peak_rss_mb[{name}]" for name in STEADY_PROCESSES},
}
COLUMNS = ["commit", "uncommitted_changes", "date", "benchmark", "cpus", "load_1m_before", "load_1m_after",
           *FIGURES]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def _one_minute(load: object) -> str:
    """The 1-minute figure of a ``"1.20 / 0.90 / 0.70"`` load average."""
    return str(load).split("/")[0].strip() if load else ""


def row_of(result: Mapping[str, object], benchmark: str) -> dict[str, str]:
    figures = {column: result.get(key) for column, key in FIGURES.items()}
    return {
        "commit": _git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_changes": "yes" if _git("status", "--porcelain", "--untracked-files=no").strip() else "no",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "benchmark": benchmark,
        "cpus": str(os.cpu_count()),
        "load_1m_before": _one_minute(result.get("load_average_before")),
        "load_1m_after": _one_minute(result.get("load_average_after")),
        **{column: "" if value is None else str(value) for column, value in figures.items()},
    }


def append(result: Mapping[str, object], benchmark: str) -> dict[str, str]:
    """Append ``result``'s row to the history (header first in a new file) and redraw the plot."""
    row = row_of(result, benchmark)
    HISTORY.parent.mkdir(parents=True, exist_ok=True)
    header, rows = _read()
    columns = [*header, *(column for column in COLUMNS if column not in header)]
    if header and columns != header:  # new columns: the header grows, every row is kept as it was
        with HISTORY.open("w", newline="") as file:
            writer = csv.DictWriter(file, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    with HISTORY.open("a", newline="") as file:
        writer = csv.DictWriter(file, columns, restval="", extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerow(row)
    plot(_read()[1])
    return row


def _read() -> tuple[list[str], list[dict[str, str]]]:
    """The history's header and rows (none when there is no file yet)."""
    if not HISTORY.exists():
        return [], []
    with HISTORY.open(newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def plot(rows: list[dict[str, str]]) -> None:
    """One panel per family of figures, one point per run (x: the run's commit and date)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("events/s", [("end_to_end_events_per_s", "end-to-end"), ("topology_limit_events_per_s", "identity topology"),
                      ("peer_events_per_s", "Quix peer")], None),
        ("ratio", [("ratio_to_produce_only", "end-to-end / produce-only")], 0.12),
        ("freshness s", [("freshness_p50_s", "p50"), ("freshness_p95_s", "p95"), ("freshness_p99_s", "p99")], 2.0),
        ("peak RSS MB (backlog)", [(f"peak_rss_mb_{n}", n) for n in PIPELINE_SERVICES], 300),
        ("CPU-µs per event", [("cpu_us_per_event", "every process")], None),
        ("steady cores (demo rate)", [("steady_cores_total", "total"), *((f"steady_cores_{n}", n)
                                      for n in ("silver_refiner", "gold_aggregator", "api", "kafka", "minio"))], 0.5),
    ]
    labels = [f"{r['commit']}{'+' if r.get('uncommitted_changes') == 'yes' else ''}\n{r['date'][5:16]}" for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.6 * len(panels)), sharex=True)
    for ax, (title, series, target) in zip(axes, panels, strict=True):
        for column, name in series:
            points = [(i, float(r[column])) for i, r in enumerate(rows) if r.get(column)]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1.2, label=name)
        if target is not None:
            ax.axhline(target, color="red", linestyle="--", linewidth=0.8, label="target")
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xticks(range(len(rows)), labels, fontsize=7, rotation=45, ha="right")
    axes[0].set_title("Performance history (bench/results/history.csv; + = uncommitted changes)")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)
