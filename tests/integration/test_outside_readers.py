"""Outside engines read the lake's Delta tables exactly as the project's own reader does.

Tables written through ``archlab.lake.tables.Tables`` (the way every layer lands) are read back on the
real MinIO by PySpark with Delta Lake (``spark.read.format("delta")`` over ``s3a://``, jars from
``make provision`` only) and by polars (``pl.read_delta``, its own Parquet reader over the delta-rs log),
and each must give exactly the rows of ``Tables.read``, at the latest version and by time travel.

The pipeline's own tables (silver, quarantine and each gold table of a copy of the orders contract,
landed by the silver_refiner and gold_aggregator services from synthetic events with dirty ones among
them) are read the same way. Tables written here directly are shaped like the pipeline's, with the orders contract's own column types: a silver table
partitioned by event date (decimals, timestamps, nulls, dates across a year's end), appended in several
commits with application transactions, evolved by a new optional column, compacted and checkpointed;
and a gold current-value table merged several times by null-safe keys (a null dimension among them),
where an older revision never replaces a newer one.

One Spark session serves the whole module; its start-up is printed (12-45 s measured on 2 busy cores).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.settings import PROJECT_ROOT, Settings
from archlab.devstack.native import NativeStack
from archlab.ingest.generators import DirtyRates
from archlab.ingest.produce import produce_synthetic
from archlab.kafka.lag import wait_caught_up
from archlab.lake.query import table_stats
from archlab.lake.spark import SparkSettings, s3a_uri, spark_session
from archlab.lake.tables import Landed, Tables
from tests.integration.conftest import ServiceProcess, wait_until
from tests.integration.test_silver import copy_contract

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

pytestmark = [pytest.mark.integration, pytest.mark.spark]

CONTRACT = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml")
AGGREGATE = "by_country_1m"
DATE = pa.field(names.DATE_PARTITION, pa.date32(), nullable=False)
SILVER_SCHEMA = CONTRACT.silver_schema.append(DATE)
EVOLVED_SCHEMA = SILVER_SCHEMA.append(pa.field("gift_note", pa.string()))
GOLD_SCHEMA = CONTRACT.aggregate_schema(AGGREGATE)
GOLD_KEYS = ["aggregate", "window_start", *CONTRACT.aggregate(AGGREGATE).group_by]
#: Event times start two days before a year's end and step 7 hours (and a millisecond) per row.
START = datetime(2025, 12, 30, 1, 0, tzinfo=UTC)

Row = tuple[Any, ...]


# ---- sample data of any contract type ------------------------------------------------------------------

def sample(field: pa.Field, row: int) -> object:
    """A value of ``field``'s type for ``row``; every fourth row null where the field is optional."""
    kind = field.type
    if field.nullable and row % 4 == 3:
        return None
    moment = START + timedelta(hours=7 * row, milliseconds=row)
    if pa.types.is_timestamp(kind):
        return moment
    if pa.types.is_date(kind):
        return moment.date()
    if pa.types.is_decimal(kind):
        return Decimal(row * 1234 + 5).scaleb(-kind.scale)
    if pa.types.is_integer(kind):
        return row
    if pa.types.is_floating(kind):
        return row / 3
    if pa.types.is_boolean(kind):
        return row % 2 == 0
    if pa.types.is_string(kind):
        return f"{field.name}-{row % 5}"
    raise AssertionError(f"no sample value for {field}")


def table_of(schema: pa.Schema, rows: Iterable[Mapping[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def silver_rows(schema: pa.Schema, rows: range) -> pa.Table:
    return table_of(schema, ({f.name: sample(f, row) for f in schema} for row in rows))


def gold_rows(revision: int, windows: range, countries: Iterable[str | None] = ("DE", "FR", None)) -> pa.Table:
    """One row per (window, country) as the aggregator would emit it at ``revision``."""
    rows = []
    for window in windows:
        for country in countries:
            values = {f.name: sample(f, 10 * revision + window) for f in GOLD_SCHEMA}
            start = START + timedelta(minutes=window)
            values.update(aggregate=AGGREGATE, window_start=start, window_end=start + timedelta(minutes=1),
                          country=country, events=10 * revision + window, late_events=revision - 1,
                          final=revision == 3, revision=revision, watermark=start + timedelta(minutes=revision))
            rows.append(values)
    return table_of(GOLD_SCHEMA, rows)


# ---- reading with each engine, compared as sorted Python values ------------------------------------------

def canonical(value: object) -> object:
    """Spark hands timestamps out as naive local times, the others as aware UTC: the same instant either way."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    return value


def sort_key(row: Row) -> tuple[tuple[bool, object], ...]:
    """Nulls last; nested values (lists, structs) by their text, as they have no order of their own."""
    return tuple((v is None, 0 if v is None else repr(v) if isinstance(v, list | dict) else v) for v in row)


def sorted_rows(records: Iterable[Mapping[str, object]], columns: list[str]) -> list[Row]:
    return sorted((tuple(canonical(record[c]) for c in columns) for record in records), key=sort_key)


def spark_type(kind: pa.DataType) -> str:
    """The Spark SQL type name a Delta column of this Arrow type must read as."""
    if pa.types.is_decimal(kind):
        return f"decimal({kind.precision},{kind.scale})"
    if pa.types.is_timestamp(kind):
        return "timestamp" if kind.tz else "timestamp_ntz"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return f"array<{spark_type(kind.value_type)}>"
    if pa.types.is_struct(kind):
        return f"struct<{','.join(f'{f.name}:{spark_type(f.type)}' for f in kind)}>"
    simple = {pa.string(): "string", pa.large_string(): "string", pa.binary(): "binary",
              pa.large_binary(): "binary", pa.int64(): "bigint", pa.int32(): "int", pa.int16(): "smallint",
              pa.float64(): "double", pa.bool_(): "boolean", pa.date32(): "date"}
    return simple[kind]


def spark_frame(spark: SparkSession, settings: Settings, path: str, version: int | None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(s3a_uri(settings, path))


def assert_engines_agree(spark: SparkSession, settings: Settings, tables: Tables, path: str,
                         version: int | None) -> pa.Table:
    """Spark and polars read exactly the rows (and Spark the types) of ``Tables.read``; returns the latter."""
    ours = tables.read(path, as_of=version)
    assert ours is not None, f"{path} does not exist"
    columns = ours.column_names
    expected = sorted_rows(ours.to_pylist(), columns)

    frame = spark_frame(spark, settings, path, version)
    assert dict(frame.dtypes) == {f.name: spark_type(f.type) for f in ours.schema}, f"spark's types of {path}"
    assert sorted_rows((r.asDict(recursive=True) for r in frame.collect()), columns) == expected, \
        f"spark read other rows of {path} at version {version}"

    polars_frame = pl.read_delta(tables.uri(path), version=version, storage_options=tables.storage_options)
    assert sorted(polars_frame.columns) == sorted(columns), f"polars' columns of {path}"
    assert sorted_rows(polars_frame.to_dicts(), columns) == expected, \
        f"polars read other rows of {path} at version {version}"
    return ours


# ---- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spark(stack: NativeStack, pytestconfig: pytest.Config) -> Iterator[SparkSession]:
    """One local Spark session for the module (its JVM start is the expensive part)."""
    started = time.monotonic()
    session = spark_session(SparkSettings())  # type: ignore[call-arg]  # LAB_* from the stack fixture
    seconds = time.monotonic() - started
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown in every run, not only with -s
        print(f"\n[outside readers] Spark {session.version} session started in {seconds:.1f} s")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def tables(settings: Settings) -> Tables:
    return Tables.from_settings(settings)


@pytest.fixture(scope="module")
def dataset() -> str:
    return f"outside_{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def silver(tables: Tables, dataset: str) -> dict[str, int]:
    """A silver-like table: three landed batches (the last after a new optional column), then compaction
    and a checkpoint. Returns name -> version of the moments the test travels back to."""
    path = names.table_path("silver", dataset)
    app_id = names.app_id("outside-readers", names.silver_topic(dataset), 0)
    table = tables.ensure(path, SILVER_SCHEMA, [DATE.name])
    tables.append(table, silver_rows(SILVER_SCHEMA, range(0, 12)), [Landed(app_id, 11)])
    tables.append(table, silver_rows(SILVER_SCHEMA, range(12, 24)), [Landed(app_id, 23)])
    before_evolution = table.version()
    table = tables.ensure(path, EVOLVED_SCHEMA, [DATE.name])
    tables.append(table, silver_rows(EVOLVED_SCHEMA, range(24, 36)), [Landed(app_id, 35)])
    before_compaction = table.version()
    table.optimize.compact()
    table.create_checkpoint()
    return {"before_evolution": before_evolution, "before_compaction": before_compaction,
            "latest": table.version()}


@pytest.fixture(scope="module")
def gold(tables: Tables, dataset: str) -> dict[str, int]:
    """A gold current-value table: revision 1 of four windows, then 2 of two of them, then 3 of one, with
    a late revision 1 of another that must not replace its revision 2. Returns name -> version."""
    path = names.table_path("gold", dataset, AGGREGATE)
    app_id = names.app_id("outside-readers", names.gold_topic(dataset), 0)
    table = tables.ensure(path, GOLD_SCHEMA)
    newer = "s.revision > t.revision"
    tables.merge(table, gold_rows(1, range(4)), GOLD_KEYS, [Landed(app_id, 1)], newer_when=newer)
    first = table.version()
    tables.merge(table, gold_rows(2, range(2)), GOLD_KEYS, [Landed(app_id, 2)], newer_when=newer)
    stale_and_new = pa.concat_tables([gold_rows(3, range(1)), gold_rows(1, range(1, 2))])
    tables.merge(table, stale_and_new, GOLD_KEYS, [Landed(app_id, 3)], newer_when=newer)
    return {"first": first, "latest": table.version()}


# ---- tests --------------------------------------------------------------------------------------------------

def test_silver_reads_the_same_in_spark_and_polars(spark: SparkSession, settings: Settings, tables: Tables,
                                                   dataset: str, silver: dict[str, int]) -> None:
    path = names.table_path("silver", dataset)
    latest = assert_engines_agree(spark, settings, tables, path, None)
    assert latest.num_rows == 36 and latest.schema.names == EVOLVED_SCHEMA.names
    assert latest.column("gift_note").null_count == 24 + 3, "rows before the new column read it as null"
    assert pc.count_distinct(latest.column(DATE.name)).as_py() > 8, "rows spread over many date partitions"

    compacted = assert_engines_agree(spark, settings, tables, path, silver["before_compaction"])
    assert compacted.num_rows == 36
    old = assert_engines_agree(spark, settings, tables, path, silver["before_evolution"])
    assert old.num_rows == 24 and old.schema.names == SILVER_SCHEMA.names

    new_year = date(2026, 1, 1)
    assert spark_frame(spark, settings, path, None).where(f"{DATE.name} = DATE'{new_year}'").count() == \
        pc.sum(pc.equal(latest.column(DATE.name), pa.scalar(new_year))).as_py(), "partition filter in Spark"


def test_gold_reads_the_same_in_spark_and_polars(spark: SparkSession, settings: Settings, tables: Tables,
                                                 dataset: str, gold: dict[str, int]) -> None:
    path = names.table_path("gold", dataset, AGGREGATE)
    latest = assert_engines_agree(spark, settings, tables, path, None)
    revisions = {(row["window_start"], row["country"]): row["revision"] for row in latest.to_pylist()}
    assert len(revisions) == latest.num_rows == 12, "one row per (window, country), the null country included"
    by_window = {START + timedelta(minutes=w): r for w, r in enumerate([3, 2, 1, 1])}
    assert revisions == {(start, country): by_window[start] for start, country in revisions}

    first = assert_engines_agree(spark, settings, tables, path, gold["first"])
    assert set(first.column("revision").to_pylist()) == {1} and first.num_rows == 12


async def test_the_pipelines_tables_read_the_same_in_spark_and_polars(
    spark: SparkSession, settings: Settings, tables: Tables, tmp_path: Path,
    start_service: Callable[..., ServiceProcess],
) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    dataset = await copy_contract(settings, folder, "orders")
    contract = load_contract(folder / f"{dataset}.yaml")
    gold_group = f"gold-{dataset}"
    env = {"LAB_DATASETS": dataset, "LAB_CONTRACTS_DIR": str(folder), "LAB_SILVER_GROUP": f"silver-{dataset}",
           "LAB_GOLD_GROUP": gold_group, "LAB_INSTANCE_ID": "test", "LAB_FLUSH_INTERVAL_S": "0.5"}
    services = [start_service("silver_refiner", **env), start_service("gold_aggregator", **env)]
    # dirty events go to quarantine; no duplicates, so that silver ∪ quarantine ends with every event sent
    sent = (await produce_synthetic(settings, "orders", count=600, rate=0, seed=74, dirty=DirtyRates(duplicate=0),
                                    topic=names.raw_topic(dataset))).sent

    def refined() -> int:
        return sum(table_stats(tables, layer, dataset).rows for layer in ("silver", "quarantine"))

    await asyncio.to_thread(wait_until, lambda: refined() == sent, 180, f"{sent} rows in silver ∪ quarantine")
    for group, topic in ((names.group(gold_group, "shuffle"), names.silver_topic(dataset)),
                         (gold_group, names.gold_shuffle_topic(dataset)),
                         (names.group(gold_group, "gold", "lake"), names.gold_topic(dataset))):
        await wait_caught_up(settings, group, [topic], timeout_s=300)
    for service in services:  # the tables stand still while the engines read them
        assert service.terminate() == 0, service.log_tail()

    paths = [names.table_path("silver", dataset), names.table_path("quarantine", dataset),
             *(names.table_path("gold", dataset, a.name) for a in contract.aggregates)]
    for path in paths:
        latest = assert_engines_agree(spark, settings, tables, path, None)
        assert latest.num_rows > 0, f"{path} is empty"
    assert assert_engines_agree(spark, settings, tables, paths[0], 1).num_rows < sent, "silver's first landing"
