"""create_app(settings): the litestar application. Policies are loaded and compiled here, once."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import yaml
from litestar import Litestar
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Tag
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.static_files import create_static_files_router

from service import __version__
from service.api.auth import load_source_scopes, load_tokens
from service.api.capture import Capture
from service.api.lane import EvaluateLane
from service.api.observability import Metrics, RequestLogMiddleware, route_of
from service.api.openapi import (
    ASSETS,
    ContractJson,
    ContractSwaggerUI,
    Dumper,
    contract,
    swagger_ui_files,
)
from service.api.problems import problem_details_config
from service.api.reload import Reloader, watching
from service.api.routes import route_handlers
from service.api.schemas import batch_body
from service.api.shadow import Shadow
from service.api.state import Active, AppState, TokensStatus, load_active, load_candidate
from service.api.tracing import Tracing, tracing_wanted
from service.policy import PolicySet
from service.settings import Settings, load_settings
from service.webhook_sources import Webhooks

__all__ = ["create_app"]

DESCRIPTION = """\
Connection policies as code. POST a connection request's metadata to `/evaluate` and get the
decision (`accept`, `decline`, `ignore` or `defer`), the rule that decided, a rationale for the
policy owner and a polite reply for the requester.

Every error is an RFC 9457 problem document (`application/problem+json`) with a stable `code`;
invalid input is always 400, with the JSON path of each offending field.
"""


def create_app(
    settings: Settings | None = None, active: Active | None = None, tracing: Tracing | None = None
) -> Litestar:
    """The app; policies and webhook sources are loaded here unless `active` is given; traced
    when `tracing` is given or the `OTEL_*` variables ask for it."""
    settings = settings or load_settings()
    metrics = Metrics(settings.metrics_policies)
    tokens = load_tokens(settings)
    state = AppState(
        settings,
        active or load_active(settings),
        metrics,
        batch_body(settings.batch_max_items),
        tokens,
        tokens_status=TokensStatus(status="ok", at=datetime.now(UTC)) if tokens.required else None,
        source_scopes=load_source_scopes(settings),
        capture=Capture.from_settings(settings, metrics),
        tracing=tracing or (Tracing() if tracing_wanted(os.environ) else None),
    )
    if settings.shadow_policies:
        # Loaded first over the live set: the policies the candidate did not change are the
        # live ones, compiled once (memory), and warm in the caches when the shadow decides.
        state.shadow = Shadow(
            Path(settings.shadow_policies),
            lambda previous: load_candidate(settings, previous or state.policy_set),
            metrics,
        )
        state.shadow.load("start-up")  # a candidate that fails to load only goes unused
    reloader = Reloader(state)
    metrics.activated(state.policy_set)
    handlers = route_handlers(state)
    app = Litestar(
        route_handlers=[
            *handlers,
            create_static_files_router(
                ASSETS,
                directories=[swagger_ui_files()],
                cache_control=CacheControlHeader(max_age=86_400),
                include_in_schema=False,
            ),
        ],
        plugins=[ProblemDetailsPlugin(problem_details_config())],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Handshake",
            version=__version__,
            description=DESCRIPTION,
            path="/docs",
            render_plugins=[ContractSwaggerUI(), ContractJson()],
            tags=[
                Tag(name="decisions", description="Evaluate connection requests"),
                Tag(name="webhooks", description="Signed deliveries from other services"),
                Tag(name="policies", description="What is loaded"),
                Tag(name="health", description="Probes and metrics"),
                Tag(name="admin", description="Operations"),
            ],
            use_handler_docstrings=False,
        ),
        lifespan=[watching],
        on_shutdown=[state.capture.close] if state.capture else [],
        logging_config=None,
        debug=False,
    )
    app.state.handshake = state
    app.state.reloader = reloader
    # Wrap the whole handler, not just matched routes, so 404s and 405s are logged and
    # counted and carry an X-Request-ID too.
    evaluate = next(h for h in handlers if h.operation_id == "evaluate")
    app.asgi_handler = RequestLogMiddleware(
        EvaluateLane(app.asgi_handler, state, evaluate), metrics
    )
    if state.tracing is not None:  # outermost: its span covers the request as received
        app.asgi_handler = state.tracing.wrap(app.asgi_handler, route_of)
    return app


def openapi_yaml() -> str:
    """The committed contract, of every deployment (`contract(committed=True)`): the default
    settings; no policies need to be loaded."""
    app = create_app(Settings(), Active(PolicySet(policies={}, digest=""), Webhooks()))
    document = contract(app, committed=True)
    return yaml.dump(document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
