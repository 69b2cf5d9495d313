"""Work that arrives together, done together: the fast lane's scheduler, apart from ASGI.

Each piece of work waits for one event-loop callback (a pass) that does every piece waiting by
then, one after another, each in the context it was submitted from, taking up no new piece
after `seconds` (it does one at least), so a pass holds the event loop only briefly. Under load
that keeps a decision's code and data in the CPU's caches instead of alternating with the
server's network code, which nearly halves what a decision costs a worker; alone, a piece
waits one turn of the loop (docs/adr/0011-decide-together.md).

Passes pay only where a piece costs about what the network code around it does (a C++
decision: ~40 µs). Work that costs more (a cel-python decision: ~2 ms) gains nothing from
waiting and loses throughput to it (bench/README.md), so once the pieces' average cost is past
`worthwhile_seconds`, `run` does each at once instead.

    passes = Passes()
    answer = await passes.run(lambda: evaluate(policy_set, name, request, now=now))
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Passes"]

T = TypeVar("T")


class Passes(Generic[T]):
    seconds = 0.002  # after this, a pass takes up no new piece
    worthwhile_seconds = 0.0005  # past this average cost a piece, pieces are done at once

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.cost = 0.0  # seconds a piece, a moving average of what was measured
        self._waiting: list[tuple[Callable[[], T], contextvars.Context, asyncio.Future[T]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the waiting wait on

    @property
    def worthwhile(self) -> bool:
        return self.cost <= self.worthwhile_seconds

    async def run(self, work: Callable[[], T]) -> T:
        """`work()`'s result, from a pass, or done at once when passes do not pay; what
        `work` raises is raised here."""
        if self.worthwhile:
            return await self.submit(work)
        return self.at_once(work)

    def at_once(self, work: Callable[[], T]) -> T:
        """`work()` now, its cost measured like a pass's."""
        started = self._clock()
        try:
            return work()
        finally:
            self._observe(self._clock() - started)

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """The future of `work()`, done by the next pass."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a worker runs one loop; tests, several
            self._loop, self._waiting = loop, []  # nothing waits on a loop that is gone
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((work, contextvars.copy_context(), future))
        if len(self._waiting) == 1:
            loop.call_soon(self._pass)
        return future

    def _pass(self) -> None:
        """The waiting pieces in order until `seconds` have passed; the rest go first in the
        next pass."""
        waiting, self._waiting = self._waiting, []
        done = 0
        started = self._clock()
        deadline = started + self.seconds
        try:
            for work, context, future in waiting:
                if done and self._clock() > deadline:
                    break
                done += 1
                if future.done():  # cancelled (uvicorn does, at the shutdown timeout)
                    continue
                try:
                    future.set_result(context.run(work))
                except Exception as exc:  # the submitter's to handle, as if it had run it
                    future.set_exception(exc)
        finally:  # whatever escaped, nobody is left waiting
            for _, _, future in waiting[:done]:
                if not future.done():
                    future.set_exception(RuntimeError("the pass stopped before this piece"))
            if done:
                self._observe((self._clock() - started) / done)
            self._waiting[:0] = waiting[done:]
            if self._waiting:
                asyncio.get_running_loop().call_soon(self._pass)

    def _observe(self, seconds: float) -> None:
        self.cost += (seconds - self.cost) / 8
