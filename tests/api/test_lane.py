"""The fast lane for POST /evaluate answers exactly as the litestar route would.

Each case is sent twice as raw ASGI: through the lane, and straight to the litestar app below
it. Status, headers and body must be the same bytes (`now` is pinned, so decision ids are too),
and the lane must have decided the plain cases itself, passing on only what the route answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
import structlog
from litestar import Litestar
from prometheus_client import generate_latest

import service.api.evaluation
import service.api.lane
from service.api.lane import EvaluateLane
from service.api.passes import Passes
from service.settings import Settings
from tests.api.conftest import TOKEN, Log, app_for, sample
from tests.conftest import POLICIES

LIMIT = 4096
NOW = "2026-11-22T09:00:00Z"


def body(**fields: Any) -> bytes:
    return json.dumps({"request": sample("old-colleague"), "now": NOW, **fields}).encode()


def headers(token: str | None = TOKEN, media: str = "application/json") -> list[Any]:
    found = [(b"content-type", media.encode())] if media else []
    return found + ([(b"authorization", f"Bearer {token}".encode())] if token else [])


async def call(
    litestar: Litestar, app: Any, head: list[Any], chunks: list[bytes]
) -> tuple[int, list[Any], bytes]:
    scope = {
        "app": litestar,  # as `Litestar.__call__` sets them before its handler
        "litestar_app": litestar,
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/evaluate",
        "raw_path": b"/evaluate",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *head],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *rest = sent
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in rest)


@pytest.fixture
def app(log: Log) -> Litestar:
    return app_for(
        Settings(policies=str(POLICIES), api_tokens=f"tests:{TOKEN}", max_body_bytes=LIMIT)
    )


def lanes(app: Litestar) -> tuple[EvaluateLane, Any, list[int]]:
    """The app's lane with the route below it counted, that route, and the count."""
    lane = app.asgi_handler.app  # type: ignore[attr-defined] - inside the request log
    assert isinstance(lane, EvaluateLane)
    passed: list[int] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        passed.append(1)
        await lane.app(scope, receive, send)

    return EvaluateLane(route, lane.state, lane.route), lane.app, passed


def answers(app: Litestar, head: list[Any], chunks: list[bytes]) -> tuple[Any, Any, bool]:
    lane, route, passed = lanes(app)
    through_lane = asyncio.run(call(app, lane, head, chunks))
    from_route = asyncio.run(call(app, route, head, chunks))
    return through_lane, from_route, not passed


DECIDED = {
    "plain": (headers(), [body()]),
    "explained, in German, named policy": (
        headers(),
        [body(explain=True, locale="de", policy="examples/met-or-worked")],
    ),
    "in chunks": (headers(), [body()[:10], body()[10:50], body()[50:]]),
    "json with a charset": (headers(media="application/json; charset=utf-8"), [body()]),
}
PASSED_ON = {
    "no token": (headers(token=None), [body()], 401),
    "a wrong token": (headers(token="not-the-token-at-all"), [body()], 401),
    "not json": (headers(media="text/plain"), [body()], 415),
    "no media type": (headers(media=""), [body()], 415),
    "malformed json": (headers(), [b'{"request": '], 400),
    "an invalid field": (headers(), [body(locale=7)], 400),
    "an unknown policy": (headers(), [body(policy="nope")], 404),
    "over the limit, announced": (
        [*headers(), (b"content-length", str(LIMIT + 1).encode())],
        [b" " * (LIMIT + 1)],
        413,
    ),
    "over the limit, streamed": (headers(), [body(), b" " * LIMIT], 413),
    "a bad content-length": ([*headers(), (b"content-length", b"12x")], [body()], 400),
}


@pytest.mark.parametrize("case", DECIDED)
def test_the_lane_decides_the_plain_cases_as_the_route_would(app: Litestar, case: str) -> None:
    head, chunks = DECIDED[case]
    through_lane, from_route, decided_by_lane = answers(app, head, chunks)
    assert through_lane == from_route
    assert through_lane[0] == 200
    assert json.loads(through_lane[2])["decision_id"]
    assert decided_by_lane


@pytest.mark.parametrize("case", PASSED_ON)
def test_everything_else_goes_to_the_route_with_its_body(app: Litestar, case: str) -> None:
    head, chunks, status = PASSED_ON[case]
    through_lane, from_route, decided_by_lane = answers(app, head, chunks)
    assert through_lane == from_route
    assert through_lane[0] == status
    assert not decided_by_lane


def test_a_fault_while_deciding_is_the_routes_500(
    app: Litestar, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("service.api.evaluation.evaluate", broken)
    through_lane, from_route, decided_by_lane = answers(app, headers(), [body()])
    assert through_lane == from_route
    assert through_lane[0] == 500
    assert not decided_by_lane
    assert [e["event"] for e in log.events()].count("internal_error") == 2  # logged, each time


def test_a_decision_whose_log_event_fails_is_a_500_and_not_counted(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenSink:
        def is_enabled_for(self, level: int) -> bool:
            return True

        def info(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("the log sink is gone")

    monkeypatch.setattr(app.state.handshake, "decision_log", BrokenSink())
    through_lane, from_route, decided_by_lane = answers(app, headers(), [body()])
    assert through_lane == from_route
    assert through_lane[0] == 500
    assert not decided_by_lane
    # Three attempts (the lane, the route behind it, the route alone), none given out.
    exposition = generate_latest(app.state.handshake.metrics.registry).decode()
    assert "handshake_decisions_total{" not in exposition


def test_a_decision_that_cannot_be_encoded_is_the_routes_500(
    app: Litestar, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.api.evaluation.evaluate

    def unencodable(*args: Any, **kwargs: Any) -> Any:
        return msgspec.structs.replace(real(*args, **kwargs), outputs={"x": object()})

    monkeypatch.setattr("service.api.evaluation.evaluate", unencodable)
    through_lane, from_route, decided_by_lane = answers(app, headers(), [body()])
    assert through_lane == from_route  # a problem document from the route, not the server's
    assert through_lane[0] == 500
    assert not decided_by_lane


TOGETHER = [
    body(),
    body(locale="de"),
    body(policy="examples/met-or-worked"),
    body(explain=True),
    body(policy="nope"),  # the route's 404
]


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes without a time limit, so what a pass holds does not depend on the machine."""
    monkeypatch.setattr(Passes, "seconds", 60.0)


def recording(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lane's decisions as they happen: "decided" in a pass (outside any request's task),
    "decided at once" in the request's own task."""
    events: list[str] = []
    real = service.api.lane.evaluate_body

    def recorded(*args: Any) -> Any:
        events.append("decided" if asyncio.current_task() is None else "decided at once")
        return real(*args)

    monkeypatch.setattr("service.api.lane.evaluate_body", recorded)
    return events


def together(
    app: Litestar, lane: Any, chunks: list[bytes], events: list[str], head: Any = None
) -> list[tuple[int, list[Any], bytes]]:
    """The answers to `chunks` sent at once; each answer is recorded in `events`."""

    async def one(chunk: bytes, extra: list[Any]) -> tuple[int, list[Any], bytes]:
        answer = await call(app, lane, [*headers(), *extra], [chunk])
        events.append("answered")
        return answer

    async def run() -> list[tuple[int, list[Any], bytes]]:
        extras = head or [[] for _ in chunks]
        return await asyncio.gather(*(one(c, e) for c, e in zip(chunks, extras, strict=True)))

    return asyncio.run(run())


def alone(app: Litestar, route: Any, chunks: list[bytes]) -> list[tuple[int, list[Any], bytes]]:
    return [asyncio.run(call(app, route, headers(), [chunk])) for chunk in chunks]


@pytest.mark.usefixtures("unhurried")
def test_requests_that_arrive_together_are_decided_together_each_as_if_alone(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane, route, passed = lanes(app)
    events = recording(monkeypatch)
    answers = together(app, lane, TOGETHER, events)
    assert answers == alone(app, route, TOGETHER)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200, 404]
    assert events == ["decided"] * 5 + ["answered"] * 5  # in one pass, before any answer
    assert len(passed) == 1  # only the unknown policy went on to the route


@pytest.mark.usefixtures("unhurried")
def test_a_fault_in_one_decision_leaves_the_others_of_its_pass_alone(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane, route, _ = lanes(app)
    real = service.api.evaluation.evaluate

    def broken_for_one_policy(policy_set: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "examples/met-or-worked":
            raise RuntimeError("boom")
        return real(policy_set, name, *args, **kwargs)

    monkeypatch.setattr("service.api.evaluation.evaluate", broken_for_one_policy)
    events = recording(monkeypatch)
    answers = together(app, lane, TOGETHER[:4], events)
    assert [status for status, _, _ in answers] == [200, 200, 500, 200]
    assert events == ["decided"] * 4 + ["answered"] * 4
    assert answers == alone(app, route, TOGETHER[:4])


@pytest.mark.usefixtures("unhurried")
def test_each_decision_of_a_pass_runs_in_its_own_requests_context(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, tuple[str, bool]] = {}
    real = service.api.lane.evaluate_body

    def recorded(state: Any, parsed: Any, scope: Any) -> Any:
        request_id = structlog.contextvars.get_contextvars()["request_id"]
        seen[parsed.locale] = (request_id, asyncio.current_task() is None)
        return real(state, parsed, scope)

    monkeypatch.setattr("service.api.lane.evaluate_body", recorded)
    locales = ["en", "de", "fr"]
    ids = [[(b"x-request-id", f"id-{locale}".encode())] for locale in locales]
    answers = together(app, app.asgi_handler, [body(locale=lc) for lc in locales], [], ids)
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert seen == {locale: (f"id-{locale}", True) for locale in locales}  # in a pass


def test_a_request_cancelled_while_it_waits_is_not_decided(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn cancels a request's task at the graceful shutdown's timeout."""
    lane, _, _ = lanes(app)
    events = recording(monkeypatch)

    async def scenario() -> tuple[int, list[Any], bytes]:
        gone = asyncio.ensure_future(call(app, lane, headers(), [body(locale="de")]))
        stays = asyncio.ensure_future(call(app, lane, headers(), [body(locale="fr")]))
        await asyncio.sleep(0)  # both now wait for the pass, which comes after this
        gone.cancel()
        answer = await stays
        with pytest.raises(asyncio.CancelledError):
            await gone
        return answer

    status, _, content = asyncio.run(scenario())
    assert status == 200
    assert json.loads(content)["reply"]["locale"] == "fr"
    assert events == ["decided"]


def test_a_pass_out_of_time_leaves_the_rest_to_the_next(
    app: Litestar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Passes, "seconds", 0.0)  # one decision per pass
    lane, route, _ = lanes(app)
    events = recording(monkeypatch)
    assert together(app, lane, TOGETHER[:3], events) == alone(app, route, TOGETHER[:3])
    assert events == ["decided", "answered"] * 3


def test_a_lane_outlives_an_event_loop_stopped_with_requests_waiting(app: Litestar) -> None:
    lane, route, _ = lanes(app)
    old = asyncio.new_event_loop()
    try:
        stranded = old.create_task(call(app, lane, headers(), [body(locale="de")]))
        old.call_soon(old.stop)  # after the request joins, before its pass runs
        old.run_forever()
        assert not stranded.done()
    finally:
        old.close()
    answer = asyncio.run(asyncio.wait_for(call(app, lane, headers(), [body()]), timeout=10))
    assert answer == asyncio.run(call(app, route, headers(), [body()]))


def test_decisions_that_cost_more_than_passes_pay_are_decided_at_once(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under cel-python (~2 ms a decision): the lane has measured them (passes.py)."""
    app = app_for(
        Settings(policies=str(POLICIES), api_tokens=f"tests:{TOKEN}", cel_engine="cel-python")
    )
    lane, route, passed = lanes(app)
    lane.passes.cost = 0.002
    events = recording(monkeypatch)
    assert together(app, lane, TOGETHER[:3], events) == alone(app, route, TOGETHER[:3])
    assert events == ["decided at once", "answered"] * 3
    assert not passed
