"""Every name the pipeline gives to a topic, a consumer group or a lake path, built and parsed here only.

Topics and lake folders are a naming convention between separate services; keeping that convention in
one module (and a unit test that forbids assembling names elsewhere) means a rename cannot leave one
service reading a topic another no longer writes.
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial


class TopicKind(StrEnum):
    """The topics of one dataset: ``<dataset>.<kind>``."""

    RAW = "raw"
    SILVER = "silver"
    QUARANTINE = "quarantine"
    GOLD = "gold"
    DQ = "dq"
    SILVER_DEDUP = "silver-dedup"  # silver_refiner's de-duplication changelog
    GOLD_SHUFFLE = "gold-shuffle"  # gold_aggregator's silver records re-keyed by time bucket
    GOLD_STATE = "gold-state"  # gold_aggregator's window-state changelog
    ALERTS = "alerts"  # the observer's alerts: one current state per alert id


#: The lake layers, in the order a record passes them; each is a folder ``<layer>/<dataset>``.
LAYERS: tuple[str, ...] = ("bronze", "silver", "quarantine", "dq", "gold")

#: The date partition column of the lake's tables (folders ``dt=YYYY-MM-DD``): no table has finer partitions.
DATE_PARTITION = "dt"


def topic(dataset: str, kind: TopicKind | str) -> str:
    """The topic of one dataset, e.g. ``topic("orders", TopicKind.RAW) == "orders.raw"``."""
    return f"{dataset}.{TopicKind(kind).value}"


# One name per kind, for call sites that always mean the same kind.
raw_topic = partial(topic, kind=TopicKind.RAW)
silver_topic = partial(topic, kind=TopicKind.SILVER)
quarantine_topic = partial(topic, kind=TopicKind.QUARANTINE)
gold_topic = partial(topic, kind=TopicKind.GOLD)
dq_topic = partial(topic, kind=TopicKind.DQ)
dedup_topic = partial(topic, kind=TopicKind.SILVER_DEDUP)
gold_shuffle_topic = partial(topic, kind=TopicKind.GOLD_SHUFFLE)
gold_state_topic = partial(topic, kind=TopicKind.GOLD_STATE)
alerts_topic = partial(topic, kind=TopicKind.ALERTS)


def dataset_topics(dataset: str) -> list[str]:
    """Every topic of a dataset, in ``TopicKind`` order."""
    return [topic(dataset, kind) for kind in TopicKind]


def parse_topic(name: str) -> tuple[str, TopicKind]:
    """``"orders.gold-shuffle"`` → ``("orders", TopicKind.GOLD_SHUFFLE)``; ValueError for a foreign topic."""
    dataset, dot, kind = name.rpartition(".")
    if not dot or not dataset:
        raise ValueError(f"{name!r} is not a dataset topic (<dataset>.<kind>)")
    return dataset, TopicKind(kind)


def dataset_of(name: str) -> str:
    """The dataset a topic belongs to."""
    return parse_topic(name)[0]


def kind_of(name: str) -> TopicKind:
    """The kind of a dataset topic."""
    return parse_topic(name)[1]


def group(service: str, *role: str) -> str:
    """A consumer group (and transactional-id prefix): the service name, then its role, e.g. ``silver_refiner-dq-lake``."""
    return "-".join((service, *role))


def table_path(layer: str, dataset: str, aggregate: str | None = None) -> str:
    """The lake folder of one table: ``<layer>/<dataset>`` or, for gold, ``gold/<dataset>/<aggregate>``."""
    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}; one of {', '.join(LAYERS)}")
    return f"{layer}/{dataset}" if aggregate is None else f"{layer}/{dataset}/{aggregate}"


def app_id(group_id: str, topic_name: str, partition: int) -> str:
    """The Delta application-transaction id of one consumer group's partition: ``<group>:<topic>:<partition>``."""
    return f"{group_id}:{topic_name}:{partition}"
