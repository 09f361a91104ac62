"""Retrying with backoff, through tenacity, the one way the library retries.

Every retry waits exponentially longer (``first_s``, doubling, at most ``max_s``), logs each failed
attempt, can give up after a time, and is stoppable: a set ``stop`` event ends the wait at once and
retries no more, so a service asked to stop is never stuck sleeping between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_any,
    stop_never,
)

log = structlog.get_logger(__name__)


class _Backoff:
    """Tenacity's wait and before hooks: doubling delays, back to ``first_s`` after an attempt that
    ran at least ``reset_after_s`` (a job that worked for a while starts its backoff afresh)."""

    def __init__(self, first_s: float, max_s: float, reset_after_s: float | None) -> None:
        self.first_s, self.max_s, self.reset_after_s = first_s, max_s, reset_after_s
        self._failures = 0
        self._attempt_started = time.monotonic()

    def before(self, state: RetryCallState) -> None:
        self._attempt_started = time.monotonic()

    def __call__(self, state: RetryCallState) -> float:
        if self.reset_after_s is not None and time.monotonic() - self._attempt_started >= self.reset_after_s:
            self._failures = 0
        delay = min(self.first_s * 2 ** self._failures, self.max_s)
        self._failures += 1
        return delay


def backoff(
    what: str,
    *,
    stop: asyncio.Event | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    first_s: float = 0.5,
    max_s: float = 5.0,
    give_up_after_s: float | None = None,
    reset_after_s: float | None = None,
    **log_fields: Any,
) -> AsyncRetrying:
    """An ``AsyncRetrying`` for ``async for attempt in backoff(...): with attempt: ...``.

    It retries on ``retry_on`` and re-raises the last error when it gives up (after
    ``give_up_after_s``, or as soon as ``stop`` is set); each failure is logged as ``<what> failed``
    with the attempt number, the coming delay and ``log_fields``.
    """
    waits = _Backoff(first_s, max_s, reset_after_s)

    async def sleep(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def stopped(state: RetryCallState) -> bool:
        return stop is not None and stop.is_set()

    def log_attempt(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(f"{what} failed, retrying", attempt=state.attempt_number,
                    retry_in_s=round(state.upcoming_sleep, 2), error=repr(error), **log_fields)

    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=waits,
        stop=stop_any(stopped, stop_after_delay(give_up_after_s) if give_up_after_s is not None else stop_never),
        sleep=sleep,
        before=waits.before,
        before_sleep=log_attempt,
        reraise=True,
    )
