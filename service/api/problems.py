"""The one table from errors to RFC 9457 problem documents (`application/problem+json`).

Every error answer is a `Problem`: a stable `type` URN and `code`, a `title` per code, the
`status`, a human `detail`, and for invalid input the JSON path of each offending field.
Client input errors are all 400, whether the JSON is malformed or breaks the schema (see
docs/adr/0004-http-contract-and-server.md). Nothing here knows about routes; nothing elsewhere knows
status codes for domain errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import structlog
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException

from service.api.scopes import OutOfScope
from service.policy import UnknownPolicyError
from service.policy.decision import Out

__all__ = ["CODES", "MEDIA_TYPE", "FieldError", "Problem", "problem", "problem_details_config"]

MEDIA_TYPE = "application/problem+json"

OUT_OF_SCOPE = ("out-of-scope", "Not within the caller's scopes")
# status -> (code, title)
CODES: dict[int, tuple[str, str]] = {
    400: ("invalid-request", "The request is not valid"),
    401: ("no-matching-signature", "The webhook signature could not be verified"),
    403: OUT_OF_SCOPE,
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "The request body must be JSON"),
    422: ("unmappable-payload", "The payload does not map to a connection request"),
    500: ("internal-error", "Internal error"),
    503: ("draining", "Shutting down: not taking new work"),
}
UNKNOWN_POLICY = ("unknown-policy", "Unknown policy")
UNKNOWN_SOURCE = ("unknown-source", "Unknown webhook source")


class FieldError(Out, frozen=True, kw_only=True):
    path: str  # JSON path in the request body, e.g. `$.request.requester.name`
    message: str
    mapping: str | None = None  # webhooks: `file:line` of the mapping leaf for this field


class Problem(Out, frozen=True, kw_only=True):
    """An RFC 9457 problem document, as every error response carries it."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None


def problem(
    status: int,
    detail: str,
    *,
    code: tuple[str, str] | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemDetailsException:
    name, title = code or CODES.get(status, ("error", "Error"))
    extra: dict[str, Any] = {"code": name}
    if errors is not None:
        extra["errors"] = msgspec.to_builtins(errors)
    return ProblemDetailsException(
        status_code=status,
        type_=f"urn:handshake:problem:{name}",
        title=title,
        detail=detail,
        extra=extra,
        headers=dict(headers) if headers else None,
    )


def _validation(exc: ValidationException) -> ProblemDetailsException:
    errors = [
        FieldError(path=_json_path(item.get("key")), message=_lower(str(item.get("message", ""))))
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    detail = errors[0].message if len(errors) == 1 else "the request body breaks the schema"
    if not errors:
        detail = _lower(exc.detail)
    return problem(400, detail, errors=errors or None)


def _http(exc: HTTPException) -> ProblemDetailsException:
    status = exc.status_code
    detail = _lower(exc.detail) if status == 400 else CODES.get(status, ("", exc.detail))[1]
    if status == 400 and "json" not in detail:
        detail = f"invalid JSON: {detail}"
    return problem(status, detail, headers=exc.headers)


def _unknown_policy(exc: UnknownPolicyError) -> ProblemDetailsException:
    return problem(404, str(exc), code=UNKNOWN_POLICY)


def _out_of_scope(exc: OutOfScope) -> ProblemDetailsException:
    return problem(403, str(exc), code=OUT_OF_SCOPE)


def _bad_utf8(exc: UnicodeDecodeError) -> ProblemDetailsException:
    return problem(400, f"invalid UTF-8 at byte {exc.start}")


def _internal(exc: Exception) -> ProblemDetailsException:
    structlog.get_logger("handshake").exception("internal_error")
    return problem(500, "an internal error occurred; it has been logged with the request id")


def problem_details_config() -> ProblemDetailsConfig:
    mapping: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
        ValidationException: _validation,
        HTTPException: _http,
        UnknownPolicyError: _unknown_policy,
        OutOfScope: _out_of_scope,
        UnicodeDecodeError: _bad_utf8,
        Exception: _internal,
    }
    return ProblemDetailsConfig(exception_to_problem_detail_map=mapping)


def _json_path(key: object) -> str:
    return "$" if not key else f"$.{key}"


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
