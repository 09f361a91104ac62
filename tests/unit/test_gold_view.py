"""The API's gold view over Delta tables on a local folder: the tables' rows served as they are, the
gold topic laid over them by revision, and time travel to an older table version (``as_of``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT
from archlab.lake.store import Lake
from archlab.lake.tables import Tables
from archlab.pipeline.gold.tables import GoldEncoder
from archlab.pipeline.silver.tables import DqEncoder, QuarantineEncoder
from archlab.serving.api import queries
from archlab.serving.api.quality import QualityFigures
from archlab.serving.api.store import BadAsOf, GoldView, key_text, parse_as_of
from tests.unit.test_gold_table import land, records, update

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
AGGREGATE = CONTRACT.aggregate("by_category_1m")
AGGREGATE_PATH = names.table_path("gold", "orders", AGGREGATE.name)
EVERYTHING = queries.TimeRange(None, None)


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(Lake.local(tmp_path), None)


def served(view: GoldView, table: object = None) -> dict[str | None, tuple[int, int]]:
    """category -> (units, revision) of the first page of by_category_1m."""
    table = view.snapshot.table(AGGREGATE.name) if table is None else table
    page = queries.windows("orders", AGGREGATE, table, EVERYTHING, {}, 100, None)
    return {i["dimensions"]["category"]: (i["measures"]["units"], i["revision"]) for i in page["items"]}


def test_the_table_is_served_as_is_and_the_topic_only_where_newer(tables: Tables) -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 1, 5),
                                  update("by_category_1m", "2025-03-03T06:01:00.000Z", None, 2, 5)))
    view = GoldView(CONTRACT, tables)
    assert view.refresh_lake() and view.rebuild()
    assert served(view) == {"books": (1, 5), None: (2, 5)}
    view.apply([orjson.loads(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 7, 9)),
                orjson.loads(update("by_category_1m", "2025-03-03T06:01:00.000Z", None, 0, 4))])  # older: ignored
    view.rebuild()
    assert served(view) == {"books": (7, 9), None: (2, 5)}
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", None, 3, 10), first_offset=2))
    assert view.refresh_lake() and not view.refresh_lake()  # a version is read once
    view.rebuild()
    assert served(view) == {"books": (7, 9), None: (3, 10)}


def test_a_rebuild_touches_only_what_changed_and_a_topic_update_lasts_its_ttl(tables: Tables) -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 1, 5)))
    view = GoldView(CONTRACT, tables)
    assert view.refresh_lake() and view.rebuild()
    untouched = view.snapshot.table("totals_1h")
    view.apply([orjson.loads(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 7, 9))])
    assert view.changed.is_set() and view.rebuild(ttl_s=60)
    assert served(view) == {"books": (7, 9)}
    assert view.snapshot.table("totals_1h") is untouched, "an aggregate without updates is not rebuilt"
    assert not view.changed.is_set() and not view.rebuild(ttl_s=60), "nothing new: no rebuild"
    view.expire_live(ttl_s=0)
    assert view.rebuild(ttl_s=0) and served(view) == {"books": (1, 5)}, "expired: the table is served again"


def test_key_texts_tell_every_combination_of_dimensions_apart() -> None:
    """The key text joins a topic row to its table row, so two different combinations of dimension values
    must never share one, whatever the values hold (quotes, commas, backslashes, the word null)."""
    rows = pa.table({"a": ['x","y', "x", "x", None, "null", "\\", '\\"'], "b": ["z", 'y","z', "y", "1", "1", '"', ""]})
    keys = key_text(rows, ["a", "b"]).to_pylist()
    assert len(set(keys)) == rows.num_rows, keys
    assert keys[2] == orjson.dumps(["x", "y"]).decode() and keys[3] == '[null,"1"]'
    assert key_text(rows, []).to_pylist() == ["[]"] * rows.num_rows


def test_as_of_reads_an_older_version_by_number_or_moment(tables: Tables) -> None:
    encoder = GoldEncoder({"orders": CONTRACT})
    view = GoldView(CONTRACT, tables)
    with pytest.raises(BadAsOf, match="no version yet"):
        view.as_of(AGGREGATE, 0)
    before = datetime.now(UTC) - timedelta(seconds=1)
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 1, 5)))
    land(tables, encoder, records(update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 4, 9), first_offset=1))
    version, table = view.as_of(AGGREGATE, 1)
    assert version == 1 and served(view, table) == {"books": (1, 5)}
    assert served(view, view.as_of(AGGREGATE, 2)[1]) == {"books": (4, 9)}
    assert view.as_of(AGGREGATE, datetime.now(UTC))[0] == 2
    for version in (1, 2):  # a commit's own timestamp (as history shows it) names that version
        assert view.as_of(AGGREGATE, tables.committed_at(AGGREGATE_PATH, version))[0] == version
    with pytest.raises(BadAsOf, match="no version 3"):
        view.as_of(AGGREGATE, 3)
    with pytest.raises(BadAsOf, match="before the first version"):
        view.as_of(AGGREGATE, before)


@pytest.mark.parametrize(("text", "parsed"), [
    ("0", 0), ("42", 42), ("2025-03-03T06:00:00Z", datetime(2025, 3, 3, 6, tzinfo=UTC)),
    ("2025-03-03T08:00:00+02:00", datetime(2025, 3, 3, 6, tzinfo=UTC)), ("2025-03-03", datetime(2025, 3, 3, tzinfo=UTC)),
])
def test_as_of_is_a_version_or_a_moment(text: str, parsed: object) -> None:
    assert parse_as_of(text) == parsed


@pytest.mark.parametrize("text", ["-1", "yesterday", "1.5", "", "²"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(BadAsOf, match="as_of"):
        parse_as_of(text)


# ---------------------------------------------------------------------------------------------- quality
def _land_quality(tables: Tables, first: datetime, hours: int) -> None:
    """A dq row per rule and a quarantined record or two per hour from ``first`` on, a commit per hour."""
    dq_target, quarantine_target = DqEncoder().targets("orders")[0], QuarantineEncoder().targets("orders")[0]
    dq = tables.ensure(dq_target.path, dq_target.schema, dq_target.partition_by)
    quarantine = tables.ensure(quarantine_target.path, quarantine_target.schema, quarantine_target.partition_by)
    for hour in range(hours):
        moment = first + timedelta(hours=hour, minutes=hour % 60)
        rules = ["duplicates", "amount_positive"]
        tables.append(dq, pa.Table.from_pylist([{
            "dataset": "orders", "minute": moment, "rule": rule, "passed": 10 + hour, "failed": hour % 3,
            "warned": hour % 2, "records": 11 + hour, "dt": moment.date()} for rule in rules], dq_target.schema), [])
        reasons = [{"check": "not_null", "field": "amount", "message": "m"}] + (
            [{"check": "parse", "field": None, "message": "m"}] if hour % 2 else [])
        tables.append(quarantine, pa.Table.from_pylist([{
            "dataset": "orders", "contract_version": 1, "source_partition": 0, "source_offset": hour * 2 + i,
            "kafka_timestamp": moment + timedelta(seconds=i), "payload": "{}", "payload_encoding": "utf-8",
            "reasons": reasons, "dt": moment.date()} for i in range(1 + hour % 2)], quarantine_target.schema), [])


def _brute_quality(tables: Tables, period: queries.TimeRange) -> dict[str, object]:
    """The figures by a full scan of both tables (what the endpoint did before it kept day sums)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("dq", tables.open(names.table_path("dq", "orders")).to_pyarrow_dataset())
    con.register("quarantine", tables.open(names.table_path("quarantine", "orders")).to_pyarrow_dataset())
    bounds = lambda column: " AND ".join(  # noqa: E731
        [f"{column} >= ?"] * (period.start is not None) + [f"{column} < ?"] * (period.end is not None)) or "true"
    params = [p for p in (period.start, period.end) if p is not None]
    rules = con.execute(f"SELECT rule, sum(passed), sum(failed), sum(warned) FROM dq WHERE {bounds('minute')} "
                        f"GROUP BY rule ORDER BY rule", params).fetchall()
    quarantined = con.execute(f"SELECT count(*) FROM quarantine WHERE {bounds('kafka_timestamp')}", params).fetchone()
    reasons = con.execute(f"SELECT r.check, r.field, count(*) AS n FROM (SELECT unnest(reasons) AS r FROM quarantine "
                          f"WHERE {bounds('kafka_timestamp')}) GROUP BY ALL ORDER BY n DESC, r.check, r.field NULLS FIRST",
                          params).fetchall()
    return {"rules": [(r, int(p), int(f), int(w)) for r, p, f, w in rules], "quarantined": quarantined[0],
            "top_reasons": [(c, f, n) for c, f, n in reasons]}


def test_quality_figures_equal_a_full_scan_for_any_period_and_read_a_whole_day_once(tables: Tables) -> None:
    first = datetime(2025, 3, 1, 20, tzinfo=UTC)
    _land_quality(tables, first, hours=40)  # three date partitions, the middle one whole
    figures = QualityFigures(tables, "orders", refresh_s=0)
    periods = [EVERYTHING, queries.TimeRange(first + timedelta(hours=3, seconds=1), None),
               queries.TimeRange(None, datetime(2025, 3, 2, 12, 30, 0, 500_000, tzinfo=UTC)),
               queries.TimeRange(datetime(2025, 3, 2, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)),
               queries.TimeRange(datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 1, 2, tzinfo=UTC))]
    for period in periods:
        body = figures.document(period)
        assert {"rules": [(r["rule"], r["passed"], r["failed"], r["warned"]) for r in body["rules"]],
                "quarantined": body["quarantined"],
                "top_reasons": [(r["check"], r["field"], r["records"]) for r in body["top_reasons"]],
                } == _brute_quality(tables, period), period
    assert figures.document(EVERYTHING)["records"] == sum(11 + hour for hour in range(40))
    # a new commit on the last day: the answer follows it, and the earlier days are not read again
    read_before = _quality_files_read()
    _land_quality(tables, first + timedelta(hours=40), hours=1)
    assert figures.document(EVERYTHING)["quarantined"] == _brute_quality(tables, EVERYTHING)["quarantined"]
    assert _quality_files_read() - read_before == 2 * 13, "only the last day's 13 files of each table are read"
    assert figures.document(EVERYTHING) is figures.document(EVERYTHING), "kept until the next commit"


def test_the_history_summed_at_start_leaves_later_answers_only_the_days_they_cut(tables: Tables) -> None:
    """What the API does before it is ready: one pass over every file; a period then reads only the files
    of the days it cuts, and equals a full scan."""
    first = datetime(2025, 3, 1, 20, tzinfo=UTC)
    _land_quality(tables, first, hours=40)  # 2025-03-01 (4 hours), 03-02 (24), 03-03 (12)
    figures = QualityFigures(tables, "orders", refresh_s=0)
    read_before = _quality_files_read()
    figures.sum_history()
    assert figures.summed and _quality_files_read() - read_before == 2 * 40
    read_before = _quality_files_read()
    period = queries.TimeRange(datetime(2025, 3, 1, 21, tzinfo=UTC), datetime(2025, 3, 3, 6, tzinfo=UTC))
    body = figures.document(period)
    assert _quality_files_read() - read_before <= 2 * (4 + 12), "the two cut days' files at most"
    assert body["quarantined"] == _brute_quality(tables, period)["quarantined"]


def _quality_files_read() -> float:
    return REGISTRY.get_sample_value("lab_api_quality_files_read_total", {"dataset": "orders"}) or 0.0


def test_the_newest_complete_window_is_the_one_before_the_newest_even_across_a_gap(tables: Tables) -> None:
    """A window is complete once a newer one exists: events after a quiet spell (06:05, nothing in
    06:02–06:04) make 06:01 the newest complete minute, compared with the minute before it (06:00)."""
    land(tables, GoldEncoder({"orders": CONTRACT}), records(
        update("by_category_1m", "2025-03-03T06:00:00.000Z", "books", 4, 1),
        update("by_category_1m", "2025-03-03T06:01:00.000Z", "books", 6, 2),
        update("by_category_1m", "2025-03-03T06:05:00.000Z", "books", 1, 3)))
    view = GoldView(CONTRACT, tables)
    assert view.refresh_lake() and view.rebuild()
    minute = next(p for p in queries.kpis(view)["periods"] if p["period"] == "minute")
    assert (minute["window_start"], minute["final"], minute["previous_window_start"]) == (
        "2025-03-03T06:05:00.000Z", False, None)
    complete = minute["complete"]
    assert (complete["window_start"], complete["previous_window_start"]) == (
        "2025-03-03T06:01:00.000Z", "2025-03-03T06:00:00.000Z")
    units = next(f for f in complete["figures"] if f["name"] == "units")
    assert (units["value"], units["previous"]) == (6, 4)
