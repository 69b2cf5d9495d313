"""The fast lane's scheduler on its own: work that arrives together is done together, in
order, each in its submitter's context, within a pass's time, and at once when passes do not
pay (service/api/passes.py)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

import pytest

from service.api.passes import Passes

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def piece(
    name: str, log: list[str], clock: Clock | None = None, cost: float = 0.0
) -> Callable[[], str]:
    def work() -> str:
        log.append(
            f"{name} as {WHO.get()} in {'a pass' if asyncio.current_task() is None else 'its task'}"
        )
        if clock is not None:
            clock.now += cost
        return name.upper()

    return work


async def submitted_by(passes: Passes[str], name: str, work: Callable[[], str]) -> str:
    WHO.set(name)
    return await passes.run(work)


class TestPasses:
    """What arrives before a pass is done in that pass, in order, as its submitter."""

    def test_work_that_arrives_together_is_done_in_one_pass_in_order(self) -> None:
        passes: Passes[str] = Passes()
        log: list[str] = []

        async def scenario() -> list[str]:
            names = ["a", "b", "c"]
            return await asyncio.gather(*(submitted_by(passes, n, piece(n, log)) for n in names))

        assert asyncio.run(scenario()) == ["A", "B", "C"]
        assert log == ["a as a in a pass", "b as b in a pass", "c as c in a pass"]

    def test_a_pass_out_of_time_takes_up_no_new_piece(self) -> None:
        clock = Clock()
        passes: Passes[str] = Passes(clock)
        events: list[str] = []

        async def one(name: str) -> str:
            result = await submitted_by(passes, name, piece(name, events, clock, cost=0.0015))
            events.append(f"{name} answered")
            return result

        async def scenario() -> list[str]:
            return await asyncio.gather(*(one(n) for n in "abcd"))

        assert asyncio.run(scenario()) == ["A", "B", "C", "D"]
        # 2 ms a pass: a and b (b starts at 1.5 ms); c and d in the next, after a and b have
        # their answers.
        assert [e.split(" as ")[0] for e in events] == [
            "a",
            "b",
            "a answered",
            "b answered",
            "c",
            "d",
            "c answered",
            "d answered",
        ]

    def test_a_failure_is_its_submitters_alone(self) -> None:
        passes: Passes[str] = Passes()

        def broken() -> str:
            raise ValueError("boom")

        async def scenario() -> list[object]:
            return await asyncio.gather(
                submitted_by(passes, "a", lambda: "fine"),
                submitted_by(passes, "b", broken),
                submitted_by(passes, "c", lambda: "also fine"),
                return_exceptions=True,
            )

        first, second, third = asyncio.run(scenario())
        assert (first, third) == ("fine", "also fine")
        assert isinstance(second, ValueError)


class TestCost:
    """Passes pay only for cheap work; costly work is done at once, in its own task."""

    def test_costly_work_is_done_at_once_and_cheap_work_brings_passes_back(self) -> None:
        clock = Clock()
        passes: Passes[str] = Passes(clock)
        log: list[str] = []

        async def scenario() -> None:
            for _ in range(4):  # 2 ms each: the average passes 0.5 ms
                await submitted_by(passes, "slow", piece("slow", log, clock, cost=0.002))
            assert not passes.worthwhile
            await submitted_by(passes, "then", piece("then", log, clock, cost=0.0))
            for _ in range(20):
                await submitted_by(passes, "fast", piece("fast", log, clock, cost=0.00001))
            assert passes.worthwhile
            await submitted_by(passes, "last", piece("last", log, clock))

        asyncio.run(scenario())
        assert log[:3] == ["slow as slow in a pass"] * 3
        assert log[4] == "then as then in its task"
        assert log[-1] == "last as last in a pass"

    @pytest.mark.parametrize("cost", [0.0, 0.01])
    def test_the_result_is_the_same_either_way(self, cost: float) -> None:
        passes: Passes[str] = Passes()
        passes.cost = cost
        assert asyncio.run(submitted_by(passes, "x", lambda: "same")) == "same"
