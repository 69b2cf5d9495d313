"""OpenAPI response entries with examples, for every status a route can answer with.

The examples are checked against their Structs by tests/api/test_service.py, so the document
cannot show an answer the service would not give.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example

from service.api.problems import CODES, MEDIA_TYPE, FieldError, Problem
from service.api.schemas import BatchResult, Health, PolicyDetail, PolicyList
from service.api.state import ReloadStatus
from service.policy.decision import Decision

__all__ = ["AUTH_401", "EXAMPLES", "responses"]

_POLICY = {
    "name": "default",
    "revision": "5d0c8a1f9b7e4c2a8f6d3b1e0a9c7d5b3f1e2a4c",
    "digest": "sha256:10a7bcf529e32feff8d0ec38da397c6d8a8fff85f4abc3606a0e7d935cab813c",
}
_DECISION: dict[str, Any] = {
    "decision": "defer",
    "rule": "reconnect-first",
    "rationale": "Known well, but the last contact was 2021-06-30T12:00:00Z",
    "reply": {
        "locale": "en",
        "text": "Hi Ada, it has been a while! Could we catch up on a call first?",
    },
    "outputs": {"next_step": "propose_call"},
    "errors": [],
    "policy": _POLICY,
    "decision_id": "3f9c2a6e-8d41-5b7a-9c3e-1f2d4b6a8c0e",
    "evaluated_at": "2026-11-22T09:00:00Z",
}
_SET = {
    "revision": _POLICY["revision"],
    "digest": _POLICY["digest"],
    "loaded_at": "2026-11-22T08:59:58.120000Z",
}
_RULES = [
    {"id": "close-tie", "decision": "accept", "source": "default.yaml:50"},
    {
        "id": "ask-for-context",
        "decision": "defer",
        "description": "No note: ask first.",
        "source": "default.yaml:76",
    },
]

# status 200 examples, by the type they show
EXAMPLES: dict[type, dict[str, Any]] = {
    Decision: _DECISION,
    BatchResult: {
        "decided": 1,
        "failed": 1,
        "results": [
            {"index": 0, "status": 200, "decision": _DECISION},
            {
                "index": 1,
                "status": 404,
                "problem": {"code": "unknown-policy", "detail": "unknown policy `team/sales`"},
            },
        ],
    },
    PolicyList: {
        **_SET,
        "policies": [
            {
                "name": "default",
                "description": "A sensible starting point",
                "rules": _RULES,
                "default": "ignore",
            }
        ],
    },
    PolicyDetail: {
        **_SET,
        "name": "team/sales",
        "file": "team/sales.yaml",
        "description": "A sensible starting point",
        "extends": ["default"],
        "default_locale": "en",
        "on_error": "skip",
        "params": {"industries": ["software", "data"]},
        "variables": {"has_note": 'request.message.trim() != ""'},
        "rules": _RULES,
        "default": "ignore",
    },
    ReloadStatus: {
        "status": "failed",
        "at": "2026-11-22T09:01:00Z",
        "problems": [
            "policies/default.yaml:52:15: $.rules[3].decision: invalid value `acept`; "
            "did you mean `accept`?"
        ],
    },
    Health: {
        "status": "ok",
        "policies": 7,
        "revision": _POLICY["revision"],
        "digest": _POLICY["digest"],
    },
}

_PROBLEM_DETAILS = {
    400: "expected `bool`, got `str`",
    401: "no `webhook-signature` entry matches",
    403: "the token `sales-crm` may not evaluate `team/hr` (its scopes: evaluate=team/sales/**)",
    422: "`requester.name` (mapped at policies/webhooks.yaml:21): no such key `full_name`",
    503: "SIGTERM received; finishing the requests in flight",
    404: "unknown policy `team/sales`",
    405: "Method not allowed",
    413: "The request body is too large",
    415: "expected `application/json`, got `text/plain`",
}


_MORE = {
    401: " (code: missing-header, malformed-header, no-matching-signature or "
    "timestamp-out-of-tolerance)",
    404: " (code: not-found, unknown-policy or unknown-source)",
}


def problem_example(status: int) -> dict[str, Any]:
    code, title = CODES[status]
    if status == 404:
        code, title = "unknown-policy", "Unknown policy"
    errors = {
        400: [FieldError(path="$.request.requester.has_photo", message=_PROBLEM_DETAILS[400])],
        422: [
            FieldError(
                path="$.requester.name",
                message="no such key `full_name`",
                mapping="policies/webhooks.yaml:21",
            )
        ],
    }
    example = Problem(
        type=f"urn:handshake:problem:{code}",
        title=title,
        status=status,
        detail=_PROBLEM_DETAILS[status],
        code=code,
        errors=errors.get(status),
    )
    return msgspec.to_builtins(example)  # type: ignore[no-any-return]


AUTH_401 = {
    "type": "urn:handshake:problem:missing-token",
    "title": "Authentication required",
    "status": 401,
    "detail": "send `Authorization: Bearer <token>`",
    "code": "missing-token",
}


def responses(ok: type | None, *problems: int, auth: bool = False) -> dict[int, ResponseSpec]:
    """The 200 answer (with its example) and the problem documents a route can give;
    `auth`: the route takes a bearer token (401 `missing-token` or `invalid-token`) whose
    scopes may not cover the call (403 `out-of-scope`)."""
    specs: dict[int, ResponseSpec] = {}
    if auth:
        specs[401] = ResponseSpec(
            data_container=Problem,
            description="Authentication required (code: missing-token or invalid-token)",
            media_type=MEDIA_TYPE,
            generate_examples=False,
            examples=[Example(summary="missing-token", value=AUTH_401)],
        )
        problems = (403, *problems)
    if ok is not None:
        specs[200] = ResponseSpec(
            data_container=ok,
            description="Success",
            generate_examples=False,
            examples=[Example(summary="example", value=EXAMPLES[ok])],
        )
    for status in problems:
        specs[status] = ResponseSpec(
            data_container=Problem,
            description=CODES[status][1] + _MORE.get(status, ""),
            media_type=MEDIA_TYPE,
            generate_examples=False,
            examples=[Example(summary=CODES[status][0], value=problem_example(status))],
        )
    return specs
