"""`handshake playground`: a local page to edit a policy and a request side by side.

As the author types, the page posts both here; the policy is written into a scratch copy of
the policy directory (so `extends` finds its bases), loaded as `check` loads it, and the
request decided with its trace, in every locale the deciding rule replies in. The answer is
`check`'s problems at their lines, or the decision. The server binds loopback only and the
page loads nothing from anywhere else (service/pages/playground.html).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.enums import MediaType

from service.pages import page
from service.policy import PolicyError, PolicySet, Problem, evaluate, load_policies
from service.policy.decision import Decision
from service.policy.request import ConnectionRequest, InputError, decode_json

__all__ = ["Playground", "playground_app"]

SAMPLE_REQUEST = Path(__file__).parent / "examples" / "requests" / "stranger.json"
MAX_POLICY_BYTES = 64 * 1024


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """What the page posts: the policy's text and the request's, as typed."""

    policy: str
    request: str
    now: datetime | None = None


class Answer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    problems: list[Problem] = []  # the policy's (`check`'s), with lines in its text
    request_problem: str | None = None  # the request's, as the API would say it
    decision: Decision | None = None  # explained
    replies: dict[str, str] = {}  # by locale: every reply of the deciding rule


@dataclass
class Playground:
    """A scratch copy of the policy directory, where the policy being edited is `name`."""

    directory: Path
    name: str
    _scratch: Path = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _previous: PolicySet | None = None

    def __post_init__(self) -> None:
        self._scratch = Path(tempfile.mkdtemp(prefix="handshake-playground-"))
        shutil.copytree(self.directory, self._scratch, dirs_exist_ok=True)

    @property
    def file(self) -> Path:
        return self._scratch / f"{self.name}.yaml"

    def original(self) -> str:
        path = self.directory / f"{self.name}.yaml"
        return path.read_text(encoding="utf-8") if path.is_file() else _STARTER

    def attempt(self, attempt: Attempt) -> Answer:
        if len(attempt.policy.encode()) > MAX_POLICY_BYTES:
            big = Problem(file=self.file.name, message="the policy is over 64 KiB")
            return Answer(problems=[big])
        with self._lock:  # one scratch directory: one load at a time
            self.file.parent.mkdir(parents=True, exist_ok=True)  # a new policy in a new folder
            self.file.write_text(attempt.policy, encoding="utf-8")
            try:
                policy_set = load_policies(
                    self._scratch, label=".", previous=self._previous, only=[self.name]
                )
            except PolicyError as exc:
                return Answer(problems=[p for p in exc.problems if self._mine(p)] or exc.problems)
            self._previous = policy_set
        problems = [p for p in policy_set.warnings if self._mine(p)]
        try:
            request = decode_json(attempt.request.encode(), ConnectionRequest)
        except InputError as exc:
            return Answer(problems=problems, request_problem=str(exc))
        now = attempt.now or datetime.now(UTC)
        decision = evaluate(policy_set, self.name, request, now=now, explain=True)
        policy = policy_set.get(self.name)
        deciding = next((r.outcome for r in policy.rules if r.id == decision.rule), policy.default)
        replies = {}
        for locale in deciding.reply:
            reply = evaluate(policy_set, self.name, request, now=now, locale=locale).reply
            if reply is not None:
                replies[locale] = reply.text
        return Answer(problems=problems, decision=decision, replies=replies)

    def _mine(self, problem: Problem) -> bool:
        return Path(problem.file).name == self.file.name

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


def playground_app(playground: Playground, port: int) -> Litestar:
    """The page and its one call. Only this machine's own pages may call it: the Host must
    be loopback (no DNS rebinding), an Origin this server's, and the body JSON (which a form
    on another site cannot send without asking first)."""
    sample = SAMPLE_REQUEST.read_text(encoding="utf-8")
    origins = {f"http://{host}:{port}" for host in ("127.0.0.1", "localhost")}

    @get("/", media_type=MediaType.HTML)
    async def index() -> str:
        data = {"name": playground.name, "policy": playground.original(), "request": sample}
        return page("playground.html", data)

    @post("/attempt", status_code=200)
    async def attempt(request: Request[Any, Any, Any], body: bytes) -> Response[bytes]:
        origin = request.headers.get("origin")
        if origin is not None and origin not in origins:
            return Response(
                b'{"error": "another site may not use the playground"}', status_code=403
            )
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return Response(b'{"error": "send application/json"}', status_code=415)
        try:
            tried = msgspec.json.decode(body, type=Attempt)
        except msgspec.DecodeError as exc:
            return Response(msgspec.json.encode({"error": str(exc)}), status_code=400)
        answer = playground.attempt(tried)
        return Response(msgspec.json.encode(answer), media_type=MediaType.JSON)

    return Litestar(
        route_handlers=[index, attempt],
        openapi_config=None,
        allowed_hosts=AllowedHostsConfig(allowed_hosts=[o.split("//")[1] for o in origins]),
        request_max_body_size=4 * MAX_POLICY_BYTES,
        debug=False,
    )


_STARTER = """\
apiVersion: handshake/v1
kind: ConnectionPolicy
rules:
  - id: worked-together
    when: request.relationship.worked_together
    decision: accept
    rationale: We worked together.
default:
  decision: ignore
  rationale: Nothing says we know each other.
"""
