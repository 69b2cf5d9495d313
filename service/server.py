"""`handshake serve`: validate settings and policies, then run the production server."""

from __future__ import annotations

import os

import structlog
import uvicorn

from service.api.app import create_app
from service.api.state import load_active
from service.log import configure_logging
from service.policy import PolicyError
from service.settings import PREFIX, Settings

__all__ = ["app_from_environment", "serve"]


def serve(settings: Settings) -> int:
    configure_logging(settings)
    log = structlog.get_logger("handshake")
    try:
        active = load_active(settings)  # fail before binding, listing every problem
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy_problem", problem=str(problem))
        log.error("not_started", reason=f"{len(exc.problems)} problem(s) in {settings.policies}")
        return 2
    policy_set = active.policy_set
    for warning in (*policy_set.warnings, *active.webhooks.warnings):
        log.warning("policy_warning", problem=str(warning))
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening_beyond_loopback", host=settings.host)
    # Workers are separate processes: they read the same settings from the environment.
    for field in settings.__struct_fields__:
        value = getattr(settings, field)
        if value is not None:
            os.environ[PREFIX + field.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        policies=len(policy_set.policies),
        revision=policy_set.revision,
        digest=policy_set.digest,
    )
    uvicorn.run(
        "service.server:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,  # one structured event per request comes from the app itself
        log_level="warning",
        proxy_headers=False,
        server_header=False,
    )
    return 0


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def app_from_environment() -> object:
    """The ASGI app of one worker process."""
    from service.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
