"""Thin handlers: decode -> core -> encode. Built per app, closing over its state.

Bodies are decoded here, strictly, with msgspec (litestar's own body parsing converts
leniently: `0` would pass for `false`). Their OpenAPI entries come from service/api/openapi.py.
"""

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import MediaType
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect
from prometheus_client import generate_latest

from service.api.auth import authenticate, permitted, policy_for, require_token
from service.api.bodies import InvalidItems, decode_batch, decode_evaluate_body
from service.api.evaluation import evaluate_body, invalid_body, require_json
from service.api.observability import note
from service.api.openapi import contract
from service.api.problems import OUT_OF_SCOPE, FieldError, problem
from service.api.responses import responses
from service.api.schemas import (
    BatchItem,
    BatchProblem,
    BatchResult,
    Health,
    PolicyDetail,
    PolicyList,
    PolicySummary,
    RuleSummary,
)
from service.api.scopes import OutOfScope
from service.api.state import AppState, ReloadStatus
from service.api.webhooks import webhook_route
from service.policy import Decision, UnknownPolicyError
from service.policy.compiled import CompiledPolicy
from service.policy.request import InputError

__all__ = ["route_handlers"]

PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # litestar adds `; charset=utf-8`


async def authorized_json(request: Request[Any, Any, Any]) -> None:
    """Before the deciding routes: a valid token, then a body declared as JSON (else 415).

    A `before_request` hook, not guards: litestar copies the whole route handler for every
    guard it runs, which costs more than the check on the hot path."""
    authenticate(request)
    require_json(request.headers.get("content-type", ""))


def route_handlers(state: AppState) -> list[HTTPRouteHandler]:
    settings, metrics = state.settings, state.metrics
    BatchBody = state.batch_body  # noqa: N806 - a type

    @post(
        "/evaluate",
        status_code=200,
        before_request=authorized_json,
        summary="Decide on one connection request",
        description=(
            "Evaluates the request against a policy (`policy`, else the configured default) and "
            "returns the decision, the rule that decided (null: the default), a rationale for "
            "the policy owner and a reply for the requester."
        ),
        responses=responses(Decision, 400, 404, 413, 415, auth=True),
        operation_id="evaluate",
        tags=["decisions"],
    )
    async def evaluate_one(request: Request[Any, Any, Any]) -> Response[bytes]:
        try:
            data = decode_evaluate_body(await request.body())
        except InputError as exc:
            raise invalid_body(exc) from None
        decision = evaluate_body(state, data, request.scope)
        note(request.scope, decision_id=decision.decision_id)
        # Encoded here: litestar's typed return path costs more than the encoding itself.
        return Response(msgspec.json.encode(decision), media_type=MediaType.JSON)

    @post(
        "/evaluate/batch",
        status_code=200,
        before_request=authorized_json,
        summary="Decide on many connection requests",
        description=(
            "Up to the configured number of items (default 100), each the body of "
            "`POST /evaluate`. A batch with an item that is not such a body is refused (400, "
            "naming every bad item's fields). Otherwise every item gets its own result: a "
            "decision, or a problem with status 403 (a policy outside the token's scopes) or "
            "404 (unknown policy); one item's problem never fails the others."
        ),
        responses=responses(BatchResult, 400, 413, 415, auth=True),
        operation_id="evaluateBatch",
        tags=["decisions"],
    )
    async def evaluate_batch(request: Request[Any, Any, Any]) -> BatchResult:
        try:
            items = decode_batch(await request.body(), BatchBody, settings.batch_max_items)
        except InputError as exc:
            raise invalid_body(exc) from None
        except InvalidItems as exc:
            errors = [
                FieldError(path=f"$.items[{index}]{(error.path or '$')[1:]}", message=error.message)
                for index, error in exc.items
            ]
            raise problem(400, f"{errors[0].path}: {errors[0].message}", errors=errors) from None
        results = []
        for index, body in enumerate(items):
            try:
                results.append(
                    BatchItem(
                        index=index, status=200, decision=evaluate_body(state, body, request.scope)
                    )
                )
            except UnknownPolicyError as exc:
                results.append(
                    BatchItem(
                        index=index,
                        status=404,
                        problem=BatchProblem(code="unknown-policy", detail=str(exc)),
                    )
                )
            except OutOfScope as exc:
                results.append(
                    BatchItem(
                        index=index,
                        status=403,
                        problem=BatchProblem(code=OUT_OF_SCOPE[0], detail=str(exc)),
                    )
                )
        decided = sum(item.status == 200 for item in results)
        note(request.scope, items=len(results), decided=decided)
        return BatchResult(decided=decided, failed=len(results) - decided, results=results)

    @get(
        "/policies",
        summary="The loaded policies",
        guards=[require_token],
        responses=responses(PolicyList, auth=True),
        operation_id="listPolicies",
        tags=["policies"],
    )
    async def list_policies(request: Request[Any, Any, Any]) -> PolicyList:
        policy_set = state.policy_set
        return PolicyList(
            revision=policy_set.revision,
            digest=policy_set.digest,
            loaded_at=policy_set.loaded_at,
            last_reload=state.last_reload,
            shadow=state.shadow.status if state.shadow else None,
            policies=[
                _summary(p)
                for name, p in sorted(policy_set.policies.items())
                if permitted(request.scope, "read", name)
            ],
        )

    @get(
        "/policies/{name:path}",
        summary="One loaded policy",
        guards=[require_token],
        description="The name may contain `/`, e.g. `/policies/examples/met-or-worked`.",
        responses=responses(PolicyDetail, 400, 404, auth=True),
        operation_id="getPolicy",
        tags=["policies"],
    )
    async def get_policy(name: FromPath[str], request: Request[Any, Any, Any]) -> PolicyDetail:
        policy_set = state.policy_set
        policy = policy_for(request.scope, policy_set, "read", name.lstrip("/"))
        summary = _summary(policy)
        return PolicyDetail(
            revision=policy_set.revision,
            digest=policy_set.digest,
            loaded_at=policy_set.loaded_at,
            name=policy.name,
            file=policy.file,
            description=summary.description,
            extends=list(policy.extends),
            default_locale=policy.default_locale,
            on_error=policy.on_error,
            params=dict(policy.params),
            variables={k: program.expression.text for k, program in policy.variables.items()},
            rules=summary.rules,
            default=summary.default,
        )

    @get(
        "/health/live",
        summary="The process is up",
        responses=responses(Health),
        operation_id="live",
        tags=["health"],
    )
    async def live() -> Health:
        return Health(status="ok")

    @get(
        "/health/ready",
        summary="A valid policy set is loaded, and the process is not shutting down",
        responses=responses(Health, 503),
        operation_id="ready",
        tags=["health"],
    )
    async def ready() -> Health:
        if state.draining:
            raise problem(503, "SIGTERM received; finishing the requests in flight")
        policy_set = state.policy_set
        return Health(
            status="ok",
            policies=len(policy_set.policies),
            revision=policy_set.revision,
            digest=policy_set.digest,
            loaded_at=policy_set.loaded_at,
            last_reload=state.last_reload,
            tokens=state.tokens_status,
            shadow=state.shadow.status if state.shadow else None,
        )

    @get(
        "/metrics",
        summary="Prometheus metrics",
        media_type=PROMETHEUS_TEXT,
        guards=[require_token],
        opt={"scope": "metrics"},  # guarded only with `metrics_require_token`
        responses=responses(None, auth=True),
        operation_id="metrics",
        tags=["health"],
    )
    async def prometheus() -> Response[bytes]:
        return Response(generate_latest(metrics.registry), media_type=PROMETHEUS_TEXT)

    @post(
        "/admin/reload",
        status_code=200,
        guards=[require_token],
        opt={"scope": "admin"},
        summary="Reload the policies now",
        description=(
            "Loads and compiles the policy directory and webhook sources, and swaps them in if "
            "they are valid; answers with the outcome. Same as SIGHUP, for one replica."
        ),
        responses=responses(ReloadStatus, auth=True),
        operation_id="reload",
        tags=["admin"],
    )
    async def reload(request: Request[Any, Any, Any]) -> ReloadStatus:
        await request.app.state.reloader.reload_all("admin endpoint")
        status = state.last_reload
        assert status is not None  # set by every reload
        return status

    @get("/", include_in_schema=False)
    async def index() -> Redirect:
        """The root leads to the docs, where every operation can be tried."""
        return Redirect("/docs")

    @get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return contract(request.app)

    return [
        evaluate_one,
        evaluate_batch,
        webhook_route(state),
        list_policies,
        get_policy,
        reload,
        live,
        ready,
        prometheus,
        index,
        openapi,
    ]


def _summary(policy: CompiledPolicy) -> PolicySummary:
    return PolicySummary(
        name=policy.name,
        description=policy.description.strip(),
        rules=[
            RuleSummary(
                id=r.id, decision=r.outcome.decision, description=r.description, source=r.origin
            )
            for r in policy.rules
        ],
        default=policy.default.decision,
    )
