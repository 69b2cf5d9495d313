"""The shadow's queue (service/api/shadow.py): it drains on whichever loop runs now, and its
log events carry none of the ids of the request that happened to schedule the drain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import structlog

from service.api.observability import Metrics
from service.api.shadow import Shadow
from service.policy import ConnectionRequest, Decision, evaluate
from tests.api.conftest import sample
from tests.conftest import bundled_policies

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
REQUEST = msgspec.convert(sample(), ConnectionRequest)


@pytest.fixture
def shadow() -> Shadow:
    """A shadow whose candidate is the live set itself."""
    live = bundled_policies()
    found = Shadow(Path("policies"), lambda _: live, Metrics())
    found.load("test")
    return found


def live(decision: str | None = None) -> Decision:
    made = evaluate(bundled_policies(), "default", REQUEST, now=NOW)
    return msgspec.structs.replace(made, decision=decision) if decision else made


async def turns(count: int = 10) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_new_loop_drains_what_a_closed_one_left(shadow: Shadow) -> None:
    async def observe_and_leave() -> None:
        shadow.observe("default", REQUEST, NOW, live())  # the loop ends before the drain

    async def observe_and_wait() -> None:
        shadow.observe("default", REQUEST, NOW, live())
        await turns()

    asyncio.run(observe_and_leave())
    asyncio.run(observe_and_wait())
    registry = shadow.metrics.registry
    assert registry.get_sample_value("handshake_shadow_decisions_total", {"result": "same"}) == 2


@pytest.fixture
def captured() -> Iterator[structlog.testing.LogCapture]:
    """Log events as the service writes them: with the context's variables merged in."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture
    finally:
        structlog.reset_defaults()


def test_a_disagreement_is_logged_without_the_schedulers_ids(
    captured: structlog.testing.LogCapture,
    shadow: Shadow,  # the capture first: it binds a logger
) -> None:
    async def a_request() -> None:
        structlog.contextvars.bind_contextvars(request_id="req-0", trace_id="t-0")
        shadow.observe("default", REQUEST, NOW, live("accept"))  # the candidate: defer
        await turns()

    asyncio.run(a_request())
    (event,) = [e for e in captured.entries if e["event"] == "shadow_disagreement"]
    assert (event["decision"], event["shadow_decision"]) == ("accept", "defer")
    assert "request_id" not in event
    assert "trace_id" not in event
