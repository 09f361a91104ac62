"""Reading a running service's consumer readiness from outside: its ``/metrics`` endpoint (LAB_METRICS_PORT).

A stage is working once ``lab_assigned_partitions`` (set by :mod:`archlab.streaming.runtime` when
partitions are assigned) is above zero for its input topics. Tests and benchmarks wait for that instead
of reading log lines, which are for people and may change wording; :func:`metric_total` reads any other
counter the same way (e.g. the lake sink's retries during an outage).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from archlab.streaming.runtime import ASSIGNED_PARTITIONS_METRIC


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> list[Sample]:
    """Every sample a service exposes now; none while it is not answering yet (starting, or gone)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_total(port: int, name: str, host: str = "127.0.0.1", **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``; 0 when there are none."""
    return sum(s.value for s in scrape(port, host) if s.name == name and labels.items() <= s.labels.items())


def owns_partitions(port: int, topic_pattern: str, host: str = "127.0.0.1") -> bool:
    """True when the service on ``port`` owns a partition of a topic matching ``topic_pattern`` (a regex)."""
    return any(
        sample.name == ASSIGNED_PARTITIONS_METRIC and sample.value > 0
        and re.search(topic_pattern, sample.labels.get("topic", "")) is not None
        for sample in scrape(port, host)
    )
