"""POST /webhooks/{source}: a signed delivery from another service, mapped and decided.

Order: unknown source 404; body over the limit 413; signature 401 (one of a fixed set of
reasons); a policy outside the source's scopes (HANDSHAKE_WEBHOOK_SCOPES) 403; body not JSON
400; payload that does not map to a request 422; then the same decision document as /evaluate.
A verified Standard Webhooks delivery is evaluated at its own timestamp, and its decision id
is derived from the webhook id and the policy revision: a retried delivery gets
byte-identical bytes from any replica with the same revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from litestar import Request, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from service.api.auth import permit_source
from service.api.bodies import decode_payload
from service.api.evaluation import invalid_body, timed_evaluation
from service.api.observability import note
from service.api.problems import UNKNOWN_SOURCE, FieldError, problem
from service.api.responses import responses
from service.api.state import AppState
from service.policy import Decision
from service.policy.evaluator import derived_id
from service.policy.mapping import MappingError
from service.policy.request import InputError
from service.webhook_sources import SignatureError, verify

__all__ = ["webhook_route"]

DESCRIPTION = """\
For services that announce new connection requests by webhook (see docs/webhooks.md). The
source's mapping turns the payload into a connection request, which is decided by the source's
policy. Deliveries must be signed: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`) or GitHub-style (`X-Hub-Signature-256`), as the source is configured.
Unsigned or wrongly signed deliveries get 401 with one of the codes `missing-header`,
`malformed-header`, `no-matching-signature`, `timestamp-out-of-tolerance`.
"""


def webhook_route(state: AppState) -> HTTPRouteHandler:
    settings = state.settings

    @post(
        "/webhooks/{source:str}",
        status_code=200,
        summary="Decide on a connection request announced by a webhook",
        description=DESCRIPTION,
        responses=responses(Decision, 400, 401, 403, 404, 413, 422),
        operation_id="webhook",
        tags=["webhooks"],
    )
    async def webhook(source: FromPath[str], request: Request[Any, Any, Any]) -> Decision:
        active = state.active  # one set for the whole delivery, even during a reload
        hook = active.webhooks.sources.get(source)
        if hook is None:
            raise problem(404, f"unknown webhook source `{source}`", code=UNKNOWN_SOURCE)
        headers = list(request.scope["headers"])
        raw = await request.body()
        try:
            verified = verify(
                hook,
                headers,
                raw,
                now=datetime.now(UTC),
                tolerance=settings.webhook_tolerance_seconds,
            )
        except SignatureError as exc:
            note(request.scope, source=source, rejected=exc.reason)
            raise problem(
                401,
                exc.detail,
                code=(exc.reason, "The webhook signature could not be verified"),
                headers={"WWW-Authenticate": f'Signature realm="webhooks/{source}"'},
            ) from None
        note(request.scope, source=source)
        permit_source(state.source_scopes, source, hook.policy)
        try:
            data = decode_payload(await request.body())
        except InputError as exc:
            raise invalid_body(exc) from None
        try:
            connection = hook.mapping.apply(data, _header_map(headers))
        except MappingError as exc:
            error = FieldError(path=f"$.{exc.field}", message=exc.message, mapping=exc.where)
            raise problem(422, str(exc), errors=[error]) from None
        policy_set = active.policy_set
        decision = timed_evaluation(
            state,
            request.scope,
            policy_set,
            hook.policy,
            connection,
            now=verified.timestamp or datetime.now(UTC),
            locale=hook.locale,
            identifier=derived_id(policy_set, "webhook", source, verified.webhook_id),
            source=source,
            webhook_id=verified.webhook_id,
        )
        note(request.scope, source=source, decision_id=decision.decision_id)
        return decision

    return webhook


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """What a mapping sees as `headers`: lowercase names; repeated headers joined by `, `."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        merged[key] = f"{merged[key]}, {text}" if key in merged else text
    return merged
