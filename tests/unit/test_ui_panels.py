"""The dashboard's panels without a browser: a slow or failing endpoint never holds up a reader and
leaves its last good answer; the medallion picture carries the pipeline monitor's figures."""

from __future__ import annotations

import threading

from ui.feeds import Feeds
from ui.flow import flow, flow_html


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_endpoint_keeps_its_last_good_answer_and_says_it_is_late() -> None:
    clock = Clock()
    feeds = Feeds(workers=2, clock=clock)
    answers = iter([{"n": 1}])

    def fetch() -> dict:
        answer = next(answers, None)
        if answer is None:
            raise RuntimeError("the API answered 500")
        return answer

    first = feeds.read("quality", fetch, every_s=2, wait_s=5)
    assert first.value == {"n": 1} and first.error is None and not first.late(clock.now, 2)
    clock.now += 2
    feeds.read("quality", fetch, every_s=2, wait_s=5)
    clock.now += 3
    failed = feeds.read("quality", fetch, every_s=2, wait_s=5)
    assert failed.value == {"n": 1} and failed.fetched_at == 1000.0
    assert failed.error == "the API answered 500" and failed.late(clock.now, 2)
    assert failed.age(clock.now) == 5.0


def test_a_slow_endpoint_holds_up_no_reader_and_one_call_runs_at_a_time() -> None:
    clock = Clock()
    feeds = Feeds(workers=4, clock=clock)
    release = threading.Event()
    calls = []

    def slow() -> str:
        calls.append(1)
        release.wait(10)
        return "late answer"

    assert feeds.read("slow", slow, every_s=1, wait_s=0.05).value is None
    clock.now += 30
    pending = feeds.read("slow", slow, every_s=1)
    assert pending.value is None and pending.late(clock.now, 1) and len(calls) == 1
    assert feeds.read("fast", lambda: "fast answer", every_s=1, wait_s=5).value == "fast answer"
    release.set()
    assert feeds.read("slow", slow, every_s=1, wait_s=5).value == "late answer"


PIPELINE = {
    "sampled_at": "2026-11-30T05:46:09.000Z", "health": "ok",
    "services": [
        {"service": "silver_refiner", "health": "ok", "groups": [{"group": "silver_refiner", "lag": 12, "events_per_s": 850.0,
         "health": "ok", "topics": [{"topic": "orders.raw", "layer": "raw", "committed": 9000, "lag": 12,
                                     "events_per_s": 850.0}]}]},
        {"service": "gold_aggregator", "health": "stalled", "groups": [{"group": "gold_aggregator", "lag": 5000,
         "events_per_s": 0.0, "health": "stalled", "topics": [{"topic": "orders.silver", "layer": "silver",
                                                               "committed": 4000, "lag": 5000, "events_per_s": 0.0}]}]},
        {"service": "other", "health": "ok", "groups": [{"group": "other", "lag": 0, "events_per_s": 1.0, "health": "ok",
         "topics": [{"topic": "sensors.raw", "layer": "raw", "committed": 1, "lag": 0, "events_per_s": 1.0}]}]},
    ],
    "topics": [{"topic": "orders.raw", "dataset": "orders", "layer": "raw", "end_offset": 9012, "events_per_s": 861.5},
               {"topic": "orders.silver", "dataset": "orders", "layer": "silver", "end_offset": 9000,
                "events_per_s": 840.0}],
    "lake": [{"dataset": "orders", "layer": "silver", "table": "silver/orders", "version": 7, "last_commit": None,
              "files": 3, "rows": 123456, "bytes": 1},
             {"dataset": "orders", "layer": "gold", "table": "gold/orders/totals_1h", "version": 2, "last_commit": None,
              "files": 1, "rows": 2, "bytes": 1}],
}


def _figures(picture: object) -> dict[str, str]:
    nodes = [picture.raw, picture.first_hop, *picture.landed, picture.second_hop, picture.gold]  # type: ignore[attr-defined]
    return {f.key: f.text for node in nodes for f in node.figures}


def test_the_medallion_carries_the_pipeline_figures_and_marks_what_needs_attention() -> None:
    picture = flow(PIPELINE, "orders", quarantine_rate=0.0612, quality_late=False)
    figures = _figures(picture)
    assert figures["raw.rate"] == "861.5/s" and figures["raw.records"] == "9,012"
    assert figures["raw.silver_refiner.rate"] == "850.0/s" and figures["raw.silver_refiner.lag"] == "12"
    assert "raw.other.rate" not in figures, "another dataset's reader"
    assert figures["silver.rows"] == "123,456" and figures["bronze.rows"] == "0"
    assert figures["quarantine.share"] == "6.12%" and figures["gold.totals_1h.rows"] == "2 rows"
    levels = {n.key: n.level for n in [picture.first_hop, *picture.landed, picture.second_hop]}
    assert levels == {"raw-readers": "", "bronze": "", "silver": "", "quarantine": "warn", "silver-readers": "alert"}
    html = flow_html(picture)
    assert 'data-figure="silver.rows">123,456<' in html


def test_a_late_quality_answer_greys_only_the_quarantine_share() -> None:
    picture = flow(PIPELINE, "orders", quarantine_rate=None, quality_late=True)
    assert _figures(picture)["quarantine.share"] == "– (late)"
    assert picture.landed[2].level == "late" and picture.landed[1].level == ""
