"""The API's gold view over Delta tables on a local folder: the tables' rows served as they are, the
gold topic laid over them by revision, and time travel to an older table version (``as_of``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT
from archlab.lake.store import Lake
from archlab.lake.tables import Tables
from archlab.pipeline.gold.stages import GoldEncoder
from archlab.serving.api import queries
from archlab.serving.api.store import BadAsOf, GoldView, parse_as_of
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
