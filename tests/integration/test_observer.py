"""The observer as a process against real Kafka and MinIO: freshness and quarantine-rate alerts open
and resolve on ``<dataset>.alerts``, reach a local webhook receiver and the lake's alert history; a
kill -9 neither loses nor repeats an alert; bad dq records are skipped and counted.

Each test has its own dataset (a copy of the orders contract with short objectives). Raw records are
sent by a plain producer (freshness reads only raw's end offsets); dq records are written as
silver_refiner writes them (``archlab.pipeline.silver.stage``: one row per batch and check, the
``duplicates`` row carrying the batch's record count), so no pipeline stage has to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import faust
import orjson
import pytest
from aiokafka.admin import NewTopic

from archlab.contract import load_contract
from archlab.core import names
from archlab.core.alerts import Alert, AlertState
from archlab.core.settings import PROJECT_ROOT, ObserverSettings, Settings
from archlab.kafka.clients import make_producer, read_all, topic_partitions
from archlab.kafka.lag import wait_caught_up
from archlab.kafka.topics import changelog_topic, create_topics
from archlab.lake.tables import Tables
from archlab.observe.alerts import OpenAlerts
from archlab.observe.app import build_app
from archlab.observe.run import table_changelogs
from tests.integration.conftest import ServiceProcess, eventually, wait_until

FRESHNESS_S = 10
SAMPLE_S = 1
SETTLE_S = 3
DQ_KEY = b"duplicates"  # silver keys each dq record by its rule


class Webhook:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self, objective: str) -> list[str]:
        return [body["state"] for body in self.received if body["objective"] == objective]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def write_contract(folder: Path, dataset: str, objectives: str) -> None:
    """The orders contract under the dataset's name, with ``objectives`` (YAML) replacing the defaults."""
    (folder / "reference").symlink_to(PROJECT_ROOT / "contracts" / "reference")
    text = (PROJECT_ROOT / "contracts" / "orders.yaml").read_text().replace("dataset: orders", f"dataset: {dataset}", 1)
    (folder / f"{dataset}.yaml").write_text(f"{text}\nobjectives:\n{objectives}")


@pytest.fixture
def observer_env(fresh_dataset: str, tmp_path: Path, webhook: Webhook) -> dict[str, str]:
    return {"LAB_DATASETS": fresh_dataset, "LAB_OBSERVER_GROUP": names.group("observer", fresh_dataset), "LAB_CONTRACTS_DIR": str(tmp_path), "LAB_INSTANCE_ID": "observer-test",
            "LAB_OBSERVER_STATE_DIR": str(tmp_path / "state"), "LAB_OBSERVER_SAMPLE_S": str(SAMPLE_S),
            "LAB_OBSERVER_SETTLE_S": str(SETTLE_S), "LAB_ALERT_WEBHOOK_URL": webhook.url, "LAB_FLUSH_INTERVAL_S": "1"}


class Feed:
    """Sends records to a topic in the background while ``on``."""

    def __init__(self, settings: Settings, topic: str, value: bytes, every_s: float = 0.2, key: bytes = b"k") -> None:
        self.settings, self.topic, self.value, self.every_s, self.key = settings, topic, value, every_s, key
        self.on = asyncio.Event()
        self.sent = 0

    async def run(self) -> None:
        producer = make_producer(self.settings)
        await producer.start()
        try:
            while True:
                await self.on.wait()
                await producer.send_and_wait(self.topic, self.value, key=self.key)
                self.sent += 1
                await asyncio.sleep(self.every_s)
        finally:
            await producer.stop()


@contextlib.asynccontextmanager
async def feeding(feed: Feed) -> AsyncIterator[Feed]:
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def alerts_of(settings: Settings, dataset: str, objective: str) -> list[Alert]:
    """Every alert record of the dataset's alerts topic for ``objective``, in offset order per partition."""
    return [alert for record in await read_all(settings, names.alerts_topic(dataset))
            if (alert := Alert.from_json(record.value)).objective == objective]


def latest(alerts: list[Alert]) -> dict[str, Alert]:
    """The current state per alert id (what the compacted topic keeps)."""
    out: dict[str, Alert] = {}
    for alert in alerts:
        if alert.alert_id not in out or alert.updated_at >= out[alert.alert_id].updated_at:
            out[alert.alert_id] = alert
    return out


async def wait_for_alerts(settings: Settings, dataset: str, objective: str, state: AlertState, count: int,
                          timeout: float, observer: ServiceProcess) -> dict[str, Alert]:
    """Until ``count`` alerts of ``objective`` are in ``state`` on the topic; returns the current states."""
    deadline = time.monotonic() + timeout
    while True:
        current = latest(await alerts_of(settings, dataset, objective))
        if sum(alert.state is state for alert in current.values()) >= count:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} {state} {objective} alert(s) within {timeout:.0f} s: {current}\n"
                                 f"{observer.log_tail()}")
        await asyncio.sleep(0.5)


async def samples_taken(settings: Settings, dataset: str, count: int, observer: ServiceProcess) -> None:
    """Until the observer's sampler has written ``count`` health samples of the dataset (in all)."""

    async def enough() -> bool:
        return len(await read_all(settings, names.health_topic(dataset))) >= count

    await eventually(enough, 90, lambda: f"{count} health samples\n{observer.log_tail()}")


def dq_row(dataset: str, records: int, quarantined: int) -> bytes:
    """The ``duplicates`` row silver_refiner writes for one batch (all valid records unique)."""
    return orjson.dumps({"dataset": dataset, "minute": "2026-01-01T00:00:00Z", "rule": "duplicates",
                         "passed": records - quarantined, "failed": 0, "warned": 0, "records": records})


@contextlib.asynccontextmanager
async def seen_fresh_then_silent(
    settings: Settings, dataset: str, folder: Path, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> AsyncIterator[tuple[Feed, ServiceProcess]]:
    """A dataset watched for freshness only, fed until the observer has sampled it fresh, then silent:
    its feed (``feed.on.set()`` resumes it) and the observer."""
    write_contract(folder, dataset, f"  freshness: {FRESHNESS_S}s\n  quarantine_rate: off\n"
                                    "  late_rate: off\n  consumer_stall: off\n")
    async with feeding(Feed(settings, names.raw_topic(dataset), b'{"any": "event"}')) as feed:
        feed.on.set()
        observer = start_service("observer", **observer_env)
        await samples_taken(settings, dataset, 2, observer)  # it saw the dataset fresh
        feed.on.clear()
        yield feed, observer


# ------------------------------------------------------------------------------------------------ tests
async def test_freshness_alert_opens_when_a_dataset_stops_and_resolves_when_it_resumes(
    settings: Settings, fresh_dataset: str, tmp_path: Path, webhook: Webhook, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess], tables: Tables,
) -> None:
    async with seen_fresh_then_silent(settings, fresh_dataset, tmp_path, observer_env, start_service) as (feed, observer):
        stopped = time.time()
        current = await wait_for_alerts(settings, fresh_dataset, "freshness", AlertState.OPEN, 1,
                                        FRESHNESS_S + 30, observer)
        [alert] = current.values()
        assert alert.opened_at.timestamp() - stopped <= FRESHNESS_S + 30
        assert alert.threshold == FRESHNESS_S and alert.value > FRESHNESS_S and alert.unit == "s"
        await asyncio.to_thread(wait_until, lambda: webhook.states("freshness") == ["open"], 10,
                                lambda: f"the webhook got {webhook.received}")

        feed.on.set()
        current = await wait_for_alerts(settings, fresh_dataset, "freshness", AlertState.RESOLVED, 1, 30, observer)
        assert list(current) == [alert.alert_id]  # the same alert, resolved
        await asyncio.to_thread(wait_until, lambda: webhook.states("freshness") == ["open", "resolved"], 10,
                                lambda: f"the webhook got {webhook.received}")

    history = names.table_path("alert_history", fresh_dataset)

    def landed() -> list[str]:
        table = tables.open(history)
        return [] if table is None else sorted(table.to_pyarrow_table(columns=["state"])["state"].to_pylist())

    await asyncio.to_thread(wait_until, lambda: landed() == ["open", "resolved"], 30,
                            lambda: f"the alert history holds {landed()}")
    assert observer.alive()


async def test_quarantine_burst_opens_an_alert_that_resolves_after_it(
    settings: Settings, fresh_dataset: str, tmp_path: Path, webhook: Webhook, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> None:
    write_contract(tmp_path, fresh_dataset, "  freshness: off\n  quarantine_rate: {max: 10%, over: 15s}\n"
                                            "  late_rate: off\n  consumer_stall: off\n")
    clean, dirty = dq_row(fresh_dataset, 100, 1), dq_row(fresh_dataset, 100, 60)
    async with feeding(Feed(settings, names.dq_topic(fresh_dataset), clean, every_s=0.3, key=DQ_KEY)) as feed:
        feed.on.set()
        observer = start_service("observer", **observer_env)
        await samples_taken(settings, fresh_dataset, 2 + SETTLE_S // SAMPLE_S, observer)
        assert await alerts_of(settings, fresh_dataset, "quarantine_rate") == []  # 1% is within the objective

        feed.value = dirty  # the burst
        await wait_for_alerts(settings, fresh_dataset, "quarantine_rate", AlertState.OPEN, 1, 30, observer)
        feed.value = clean
        current = await wait_for_alerts(settings, fresh_dataset, "quarantine_rate", AlertState.RESOLVED, 1,
                                        15 + SETTLE_S + 30, observer)
    [alert] = current.values()
    assert alert.threshold == pytest.approx(0.1) and alert.value <= 0.1
    assert webhook.states("quarantine_rate") == ["open", "resolved"]


async def test_kill9_keeps_one_open_alert_and_one_webhook_call_per_change(
    settings: Settings, fresh_dataset: str, tmp_path: Path, webhook: Webhook, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> None:
    async with seen_fresh_then_silent(settings, fresh_dataset, tmp_path, observer_env, start_service) as (feed, observer):
        opened = await wait_for_alerts(settings, fresh_dataset, "freshness", AlertState.OPEN, 1, FRESHNESS_S + 30,
                                       observer)
        await asyncio.to_thread(wait_until, lambda: webhook.states("freshness") == ["open"], 10,
                                lambda: f"the webhook got {webhook.received}")

        observer.kill9()
        observer = start_service("observer", **observer_env)
        samples = len(await read_all(settings, names.health_topic(fresh_dataset)))
        # the new instance samples (and evaluates) for a while, the dataset still stale
        await samples_taken(settings, fresh_dataset, samples + 5, observer)
        current = latest(await alerts_of(settings, fresh_dataset, "freshness"))
        assert current == opened, "the open alert is still the one open alert"
        assert webhook.states("freshness") == ["open"]

        feed.on.set()
        await wait_for_alerts(settings, fresh_dataset, "freshness", AlertState.RESOLVED, 1, 30, observer)
        await asyncio.to_thread(wait_until, lambda: webhook.states("freshness") == ["open", "resolved"], 10,
                                lambda: f"the webhook got {webhook.received}")
    assert [a.alert_id for a in webhook_alerts(webhook)] == [next(iter(opened))] * 2


async def test_the_observer_commits_transactional_dq_as_fast_as_it_is_written(
    settings: Settings, fresh_dataset: str, tmp_path: Path, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> None:
    """silver_refiner writes dq in transactions, so every batch leaves a commit marker in each partition:
    an offset faust never sees a record for. 60 transactions must not take 60 commit intervals."""
    write_contract(tmp_path, fresh_dataset, "  freshness: off\n  quarantine_rate: {max: 10%, over: 15s}\n"
                                            "  late_rate: off\n  consumer_stall: off\n")
    observer = start_service("observer", **observer_env)
    await samples_taken(settings, fresh_dataset, 1, observer)
    topic = names.dq_topic(fresh_dataset)
    producer = make_producer(settings, transactional_id=f"{fresh_dataset}-dq-test")
    await producer.start()
    try:
        for _ in range(60):
            async with producer.transaction():
                for tp in await topic_partitions(settings, topic):
                    await producer.send(topic, dq_row(fresh_dataset, 100, 1), key=DQ_KEY, partition=tp.partition)
    finally:
        await producer.stop()
    try:  # faust commits every 2.8 s: without the fix, one transaction per partition each time (~170 s)
        await wait_caught_up(settings, observer_env["LAB_OBSERVER_GROUP"], [topic], timeout_s=45)
    except TimeoutError:
        raise AssertionError(f"the observer did not commit the dq topic\n{observer.log_tail()}") from None
    assert observer.alive()


def webhook_alerts(webhook: Webhook) -> list[Alert]:
    return [Alert.model_validate(body) for body in webhook.received]


async def test_bad_dq_records_are_skipped_and_counted(
    settings: Settings, fresh_dataset: str, tmp_path: Path, observer_env: dict[str, str],
    start_service: Callable[..., ServiceProcess],
) -> None:
    write_contract(tmp_path, fresh_dataset, "  freshness: off\n  quarantine_rate: {max: 10%, over: 15s}\n"
                                            "  late_rate: off\n  consumer_stall: off\n")
    observer = start_service("observer", **observer_env)
    producer = make_producer(settings)
    await producer.start()
    try:
        for value in (b"{not json", b'{"rule": "duplicates"}', b"",
                      orjson.dumps({"dataset": fresh_dataset, "rule": "duplicates", "passed": 9, "failed": 9,
                                    "records": 1})):
            await producer.send_and_wait(names.dq_topic(fresh_dataset), value, key=DQ_KEY)
    finally:
        await producer.stop()

    def skipped() -> dict[str, float]:
        return {reason: observer.metric("lab_observer_skipped_total", reason=reason)
                for reason in ("not_json", "bad_fields", "empty", "bad_counts")}

    await asyncio.to_thread(wait_until, lambda: all(count >= 1 for count in skipped().values()), 30,
                            lambda: f"skipped {skipped()}\n{observer.log_tail()}")
    # then dirty batches that are fine to read: the observer still works
    dirty = Feed(settings, names.dq_topic(fresh_dataset), dq_row(fresh_dataset, 100, 50), every_s=0.5, key=DQ_KEY)
    async with feeding(dirty) as feed:
        feed.on.set()
        await wait_for_alerts(settings, fresh_dataset, "quarantine_rate", AlertState.OPEN, 1, 30, observer)
    assert observer.alive()


def unstarted_app(settings: Settings, dataset: str, folder: Path) -> faust.App:
    """The real observer app for the dataset (orders' contract), not started; it writes no alert."""
    observer_settings = ObserverSettings(**settings.model_dump(), observer_group=names.group("observer", dataset))
    contract = load_contract(PROJECT_ROOT / "contracts" / "orders.yaml").model_copy(update={"dataset": dataset})
    return build_app(observer_settings, {dataset: contract}, OpenAlerts(None, {}),  # type: ignore[arg-type]
                     None, None, folder)  # type: ignore[arg-type]


def changelog_of(app: faust.App, table: str) -> NewTopic:
    [topic] = [t for t in table_changelogs(app) if t.name == f"{app.conf.id}-{table}-changelog"]
    return topic


async def test_the_observer_tables_changelogs_exist_with_their_partitions_before_faust_starts(
        settings: Settings, fresh_dataset: str, tmp_path: Path) -> None:
    """On a fresh broker faust's clients could see a changelog it had just declared with 0 partitions, and
    the health agent crashed at its first write to that table (PartitionsMismatch), so no alert resolved:
    run.py creates them, visible, first. Here: the real observer app's changelogs, created that way."""
    app = unstarted_app(settings, fresh_dataset, tmp_path)
    wanted = table_changelogs(app)
    assert sorted(t.name for t in wanted) == sorted(f"{app.conf.id}-{table}-changelog"
                                                    for table in ("quality", "health", "pending"))
    await create_topics(settings, wanted)
    for topic in wanted:
        assert len(await topic_partitions(settings, topic.name)) == settings.topic_partitions
        assert topic.topic_configs == {"cleanup.policy": "compact"}


async def test_a_state_topic_with_other_partitions_stops_the_observer_saying_what_to_do(
        settings: Settings, fresh_dataset: str, tmp_path: Path, observer_env: dict[str, str],
        start_service: Callable[..., ServiceProcess]) -> None:
    """A changelog left by an observer run with another LAB_TOPIC_PARTITIONS: exit 1 and one line naming the
    topic and the way out, before faust starts (where the table's first write would fail)."""
    write_contract(tmp_path, fresh_dataset, "  freshness: 10s\n")
    left = changelog_of(unstarted_app(settings, fresh_dataset, tmp_path / "app"), "pending")
    await create_topics(settings, [changelog_topic(left.name, settings.topic_partitions + 1)])
    observer = start_service("observer", **observer_env)
    assert await asyncio.to_thread(observer.wait, 90) == 1, observer.log_tail()  # a UserError (run_service)
    last = observer.log_tail(1)
    assert last.startswith("observer error: ") and left.name in last
    assert f"LAB_TOPIC_PARTITIONS={settings.topic_partitions + 1}" in last


async def test_an_agent_that_raises_stops_the_observer_instead_of_crashing_unseen(
        settings: Settings, fresh_dataset: str, tmp_path: Path, observer_env: dict[str, str],
        start_service: Callable[..., ServiceProcess]) -> None:
    """faust restarts a crashed agent by itself, so a write that always fails looped unseen in a process that
    looked healthy. Here a real failure: an observer run with fewer LAB_TOPIC_PARTITIONS than the dataset's
    topics have makes its tables' changelogs smaller than the health topic, and the health agent's first
    write raises. The process must exit with an error, for its supervisor to start it again."""
    write_contract(tmp_path, fresh_dataset, "  freshness: 10s\n")
    fewer = {**observer_env, "LAB_TOPIC_PARTITIONS": str(settings.topic_partitions - 1)}
    observer = start_service("observer", **fewer)
    assert await asyncio.to_thread(observer.wait, 90) == 1, observer.log_tail()
