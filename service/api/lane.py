"""The fast lane for `POST /evaluate`: a request that will be decided skips litestar's request
handling (request and response objects, hooks, the exception middleware), which cost about
three times the decision itself (bench/README.md, docs/adr/0010-evaluate-fast-lane.md).

The lane takes only the plain case: a valid token (when tokens are on), a JSON media type, a
body within the limit that decodes into a valid body, and a known policy. Anything else goes on
to the litestar route with the received body replayed, so every error answer still comes from
one place, the route and its problem table. tests/api/test_lane.py holds both to the same bytes.

Requests that arrive together are decided together (passes.py, docs/adr/0011-decide-together.md).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from service.api.auth import identify, remember_caller
from service.api.bodies import decode_evaluate_body
from service.api.evaluation import evaluate_body, require_json
from service.api.observability import note
from service.api.passes import Passes
from service.api.schemas import EvaluateBody
from service.api.state import AppState
from service.policy.request import InputError

__all__ = ["EvaluateLane"]

PATH = "/evaluate"
_JSON_HEADERS = [(b"content-type", b"application/json")]

Answer = tuple[str, bytes] | None  # the decision's id and its JSON, or None: the route answers


class EvaluateLane:
    """Pure ASGI, in front of litestar: decides what it can, passes on the rest."""

    def __init__(self, app: ASGIApp, state: AppState, route: HTTPRouteHandler) -> None:
        self.app, self.state, self.route = app, state, route
        self.passes: Passes[Answer] = Passes()

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
            parsed = decode_evaluate_body(body)
        except InputError:
            return None
        work = functools.partial(self._answer, parsed, scope)
        if not self.passes.worthwhile:  # as `Passes.run`, without a coroutine more
            return self.passes.at_once(work)
        try:
            return await self.passes.submit(work)
        except Exception:  # a pass that stopped: the route answers
            return None

    def _answer(self, body: EvaluateBody, scope: Scope) -> Answer:
        """The decision: None when the route answers (an unknown policy, or a fault the route
        meets again and answers with a logged 500)."""
        try:
            decision = evaluate_body(self.state, body, scope)
            return decision.decision_id, msgspec.json.encode(decision)
        except Exception:
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
