"""Calls to the API that never hold up a panel: each endpoint is fetched in a worker thread, and a
panel reads the last good answer (with its age) and the last error at once.

This is what keeps panels independent: a 20-second endpoint delays only the panel that shows it, and
a failing one leaves its panel showing the last good data, marked late, while the others go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any

LATE_AFTER_S = 10.0
"""A call still running after this long (or three refresh intervals, if longer) makes its panel late."""
FORGET_AFTER_S = 600.0
"""A feed no panel read for this long is dropped (its parameters were a session's, now gone)."""


@dataclass(frozen=True)
class Reading:
    """What a panel knows of one endpoint: the last good answer and the newest failure, if newer."""

    value: Any = None
    fetched_at: float | None = None
    error: str | None = None
    failing_since: float | None = None
    pending_since: float | None = None

    def age(self, now: float) -> float | None:
        return None if self.fetched_at is None else now - self.fetched_at

    def late(self, now: float, every_s: float) -> bool:
        """The answer is older than it should be: the newest call failed, or one is slow to come back."""
        if self.error is not None:
            return True
        return self.pending_since is not None and now - self.pending_since > max(3 * every_s, LATE_AFTER_S)


@dataclass
class _Feed:
    reading: Reading = field(default_factory=Reading)
    future: Future[Any] | None = None
    started: float | None = None
    read_at: float = 0.0


class Feeds:
    """One feed per key (an endpoint with its parameters), shared by every session of the page."""

    def __init__(self, workers: int = 16, clock: Callable[[], float] = time.time) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="api-feed")
        self._clock = clock
        self._lock = threading.Lock()
        self._feeds: dict[Hashable, _Feed] = {}

    def read(self, key: Hashable, fetch: Callable[[], Any], every_s: float, wait_s: float = 0.0) -> Reading:
        """The feed's reading now; starts a call when none is running and the last one began ``every_s``
        ago or more, then waits up to ``wait_s`` for a running call (a first answer, typically)."""
        now = self._clock()
        with self._lock:
            self._forget(now)
            feed = self._feeds.setdefault(key, _Feed())
            feed.read_at = now
            self._harvest(feed)
            if feed.future is None and (feed.started is None or now - feed.started >= every_s):
                feed.future, feed.started = self._pool.submit(fetch), now
                feed.reading = _with(feed.reading, pending_since=now)
            future = feed.future
        if future is not None and wait_s > 0:
            wait_for([future], timeout=wait_s)
            with self._lock:
                self._harvest(feed)
        return feed.reading

    def _harvest(self, feed: _Feed) -> None:
        if feed.future is None or not feed.future.done():
            return
        now = self._clock()
        error = feed.future.exception()
        before = feed.reading
        if error is None:
            feed.reading = Reading(feed.future.result(), now)
        else:
            feed.reading = Reading(before.value, before.fetched_at, str(error) or type(error).__name__,
                                   before.failing_since or now)
        feed.future = None

    def _forget(self, now: float) -> None:
        for key in [k for k, f in self._feeds.items() if now - f.read_at > FORGET_AFTER_S and f.future is None]:
            del self._feeds[key]


def _with(reading: Reading, **changes: Any) -> Reading:
    return Reading(**{**reading.__dict__, **changes})
