"""The benchmarks' history (bench/history.py): one row per run, never rewritten, a growing header; and the
table of figures against their targets (bench/targets.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import history


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(history, "HISTORY", tmp_path / "history.csv")
    monkeypatch.setattr(history, "PLOT", tmp_path / "history.png")
    return tmp_path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_each_run_appends_one_row_with_its_figures_and_the_plot_is_drawn(files: Path) -> None:
    history.append({"end_to_end_events_per_s": 9_000, "freshness_p95_s": 3.1, "peak_rss_mb[api]": 280,
                    "load_average_before": "1.50 / 1.00 / 0.90", "load_average_after": "3.10 / 2.00 / 1.00"},
                   "pipeline")
    history.append({"steady_cores[total]": 1.1, "steady_cores[kafka]": 0.2}, "steady")

    first, second = rows(files / "history.csv")
    assert (first["benchmark"], first["end_to_end_events_per_s"], first["freshness_p95_s"]) == ("pipeline", "9000", "3.1")
    assert (first["peak_rss_mb_api"], first["load_1m_before"], first["load_1m_after"]) == ("280", "1.50", "3.10")
    assert (second["benchmark"], second["steady_cores_total"], second["end_to_end_events_per_s"]) == ("steady", "1.1", "")
    assert first["commit"] and first["cpus"]
    assert (files / "history.png").stat().st_size > 0


def test_a_file_from_before_a_new_column_keeps_its_rows_and_gains_the_column(files: Path) -> None:
    old = ["commit", "date", "benchmark", "end_to_end_events_per_s"]
    with (files / "history.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, old)
        writer.writeheader()
        writer.writerow({"commit": "abc1234", "date": "2026-01-01", "benchmark": "pipeline",
                         "end_to_end_events_per_s": "7025"})

    history.append({"end_to_end_events_per_s": 8_000, "freshness_p99_s": 2.5}, "pipeline")

    earlier, latest = rows(files / "history.csv")
    assert earlier == {column: "" for column in history.COLUMNS} | {
        "commit": "abc1234", "date": "2026-01-01", "benchmark": "pipeline", "end_to_end_events_per_s": "7025"}
    assert (latest["end_to_end_events_per_s"], latest["freshness_p99_s"]) == ("8000", "2.5")


def test_the_targets_table_marks_each_figure_met_or_missed_and_reads_the_latest_api_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import targets

    monkeypatch.setattr(targets, "RESULTS", tmp_path)
    (tmp_path / "api.json").write_text('{"at": "2026-11-30T07:00:00+00:00", "p99_ms": 61.5, "quality: p99_ms": 400}')
    table = targets.table({"freshness_p95_s": 1.8, "freshness_p99_s": 3.4, "ratio_end_to_end_to_peer": 3.1,
                           "load_average_before": "1.00 / 1.00 / 1.00", "load_average_after": "2.00 / 1.00 / 1.00"},
                          "pipeline")

    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| ≤ 2 s | met | this run |" in rows["freshness p95"]
    assert "| ≤ 3 s | **missed** |" in rows["freshness p99"]
    assert "| ≥ 3× | met |" in rows["ratio end-to-end / Quix Streams peer"]
    assert "| ≤ 50 ms | **missed** | `api` run of 2026-11-30T07:00:00+00:00 |" in rows["API aggregates p99 at 32 clients"]
    assert "| ≤ 1000 ms | met |" in rows["API p99: quality"]
    assert "load average 1.00 / 1.00 / 1.00 before" in table
