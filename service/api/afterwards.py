"""Work a request leaves to be done after its answer: the shadow's decisions, capture's lines.

Each piece waits in a bounded queue. Two turns of the event loop after the first one waited,
the answers whose decisions were made by then have been written; then pieces are done, one
after another, until `SLICE_SECONDS` have passed, and the rest after another two turns. They
run in a context of their own, not in that of the request that happened to schedule them
(its request and trace ids). Past `limit` waiting, a piece is refused, never queued: this
work must not cost the live path memory.

    afterwards = Afterwards(limit=10_000)
    if not afterwards.later(functools.partial(write, line)):
        dropped.inc()
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable

import structlog

__all__ = ["SLICE_SECONDS", "Afterwards"]

SLICE_SECONDS = 0.002  # then the loop serves others before the queue goes on


class Afterwards:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: deque[Callable[[], None]] = deque()
        self._scheduled = False  # a drain is due
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it is due on

    def later(self, work: Callable[[], None]) -> bool:
        """Queue `work()` for after the answers; False (and not queued) when full."""
        if len(self._waiting) >= self.limit:
            return False
        self._waiting.append(work)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a worker runs one loop; tests, several
            self._loop, self._scheduled = loop, False  # nothing drains on a loop that is gone
        if not self._scheduled:
            self._scheduled = True
            self._soon(loop)
        return True

    def _drain(self) -> None:
        deadline = time.perf_counter() + SLICE_SECONDS
        try:
            while self._waiting and time.perf_counter() < deadline:
                work = self._waiting.popleft()
                try:
                    work()
                except Exception:  # one piece's fault: the others still run
                    structlog.get_logger("handshake").exception("afterwards_failed")
        finally:
            if self._waiting:
                self._soon(asyncio.get_running_loop())
            else:
                self._scheduled = False

    def _soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """A drain two turns of the loop from now, in a context of its own."""
        context = contextvars.Context()
        loop.call_soon(lambda: loop.call_soon(self._drain, context=context), context=context)
