"""The fast lane for `POST /evaluate`: a request that will be decided skips litestar's request
handling (request and response objects, hooks, the exception middleware), which cost about
three times the decision itself (bench/README.md, docs/adr/0010-evaluate-fast-lane.md).

The lane takes only the plain case: a valid token (when tokens are on), a JSON media type, a
body within the limit that decodes into a valid body, and a known policy. Anything else goes on
to the litestar route with the received body replayed, so every error answer still comes from
one place, the route and its problem table. tests/api/test_lane.py holds both to the same bytes.

Requests that arrive together are decided together (under the C++ engine): each waits for
one callback that decides every request waiting by then, one after another, each in its own
request's context, for about `PASS_SECONDS` at most. Under load that keeps the decision's code and
data in the CPU's caches instead of alternating with the server's network code, which nearly
halves what a decision costs a worker; alone, a request waits one turn of the event loop
(bench/README.md, docs/adr/0011-decide-together.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from service.api.auth import identify, remember_caller
from service.api.bodies import evaluate_body
from service.api.decide import decide, require_json
from service.api.observability import note
from service.api.schemas import EvaluateBody
from service.api.state import AppState
from service.policy import UnknownPolicyError
from service.policy.request import InputError

__all__ = ["EvaluateLane"]

PATH = "/evaluate"
_JSON_HEADERS = [(b"content-type", b"application/json")]

# Passes pay where a decision costs about what the network code around it does (C++: ~40 µs).
# A cel-python decision costs ~2 ms: passes gained nothing with one worker and, with two,
# lost a quarter of the requests/s (measured, not understood), so it is decided at once.
DECIDED_TOGETHER = frozenset({"cel-expr-python"})
PASS_SECONDS = 0.002  # after this, a pass takes up no new request (it decides one at least)

Answer = tuple[str, bytes] | None  # the decision's id and its JSON, or None: the route answers
_Waiting = tuple[EvaluateBody, Scope, contextvars.Context, "asyncio.Future[Answer]"]


class EvaluateLane:
    """Pure ASGI, in front of litestar: decides what it can, passes on the rest."""

    def __init__(self, app: ASGIApp, state: AppState, route: HTTPRouteHandler) -> None:
        self.app, self.state, self.route = app, state, route
        self._waiting: list[_Waiting] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the waiting wait on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        received: list[ReceiveMessage] = []
        decided = await self._decide(scope, receive, received)
        if decided is None:
            await self.app(scope, _replay(received, receive), send)
            return
        decision_id, content = decided
        scope["route_handler"] = self.route  # for the request log's route label
        note(scope, decision_id=decision_id)
        length = (b"content-length", str(len(content)).encode())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*_JSON_HEADERS, length]}
        )
        await send({"type": "http.response.body", "body": content, "more_body": False})

    async def _decide(
        self, scope: Scope, receive: Receive, received: list[ReceiveMessage]
    ) -> Answer:
        headers = _first(scope["headers"], (b"authorization", b"content-type", b"content-length"))
        tokens = self.state.tokens
        try:
            if tokens.required:
                remember_caller(scope, identify(tokens, headers.get(b"authorization")))
            require_json(headers.get(b"content-type", ""))
        except HTTPException:
            return None
        body = await _read(receive, received, headers.get(b"content-length"), self._limit)
        if body is None:
            return None
        try:
            parsed = evaluate_body(body)
            if self.state.policy_set.engine in DECIDED_TOGETHER:
                return await self._together(parsed, scope)
            # Written out, not through `_answer`: with cel-python and two workers, the extra
            # call cost 8-10% of the requests/s, measured three times and not understood.
            decision = decide(self.state, parsed, scope)
            return decision.decision_id, msgspec.json.encode(decision)
        except (InputError, UnknownPolicyError):
            return None
        except Exception:  # a fault: the route meets it again, and answers a logged 500
            return None

    def _together(self, body: EvaluateBody, scope: Scope) -> asyncio.Future[Answer]:
        """The answer, from the next callback that decides every request waiting by then."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a worker runs one loop; tests, several
            self._loop, self._waiting = loop, []  # nothing waits on a loop that is gone
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((body, scope, contextvars.copy_context(), answer))
        if len(self._waiting) == 1:
            loop.call_soon(self._decide_waiting)
        return answer

    def _decide_waiting(self) -> None:
        """One pass: the waiting requests in order, taking up no new one after `PASS_SECONDS`
        (it decides one at least), so a pass holds the event loop briefly; the rest go first
        in the next pass."""
        waiting: list[_Waiting] = []
        decided = 0
        try:
            waiting, self._waiting = self._waiting, []
            deadline = time.perf_counter() + PASS_SECONDS
            for body, scope, context, answer in waiting:
                if decided and time.perf_counter() > deadline:
                    break
                decided += 1
                if not answer.done():  # else cancelled (uvicorn does, at the shutdown timeout)
                    answer.set_result(context.run(self._answer, body, scope))
        finally:  # whatever escaped, nobody is left waiting
            for *_, answer in waiting[:decided]:
                if not answer.done():
                    answer.set_result(None)
            self._waiting[:0] = waiting[decided:]
            if self._waiting:
                asyncio.get_running_loop().call_soon(self._decide_waiting)

    def _answer(self, body: EvaluateBody, scope: Scope) -> Answer:
        """A pass's decision, as `_decide` makes one at once: None when the route answers."""
        try:
            decision = decide(self.state, body, scope)
            return decision.decision_id, msgspec.json.encode(decision)
        except Exception:  # an unknown policy, or a fault the route meets again
            return None

    @property
    def _limit(self) -> int:
        return self.state.settings.max_body_bytes


def _first(raw: Any, names: tuple[bytes, ...]) -> dict[bytes, str]:
    """The first value of each of `names` among the raw ASGI headers (as litestar reads them)."""
    found: dict[bytes, str] = {}
    for name, value in raw:
        if name in names and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _read(
    receive: Receive, received: list[ReceiveMessage], announced: str | None, limit: int
) -> bytes | None:
    """The whole body, keeping every message for a replay; None past the limit, on a bad
    `content-length` or a disconnect (the route answers those)."""
    if announced is not None and not (announced.isascii() and announced.isdigit()):
        return None
    if announced is not None and int(announced) > limit:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(received: list[ReceiveMessage], receive: Receive) -> Receive:
    """`receive` as if nothing had been read yet."""
    pending = list(received)

    async def replayed() -> ReceiveMessage:
        return pending.pop(0) if pending else await receive()

    return replayed
