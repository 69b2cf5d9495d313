"""`handshake serve`: validate settings, tokens and policies, then run uvicorn.

SIGTERM: uvicorn stops accepting connections, lets in-flight requests finish (up to
`--timeout-graceful-shutdown`, 20 s here), then exits; so a rolling update loses no request.
"""

from __future__ import annotations

import faulthandler
import functools
import gc
import ipaddress
import os
import signal
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn
from litestar import Litestar

from service.api.app import create_app
from service.api.auth import load_tokens
from service.api.state import Active, load_active
from service.log import configure_logging
from service.policy import PolicyError
from service.protocol import BoundedHttpToolsProtocol, Limits
from service.settings import PREFIX, Settings, SettingsError, load_settings

__all__ = ["app_from_environment", "serve", "startup_warnings"]

GRACEFUL_SHUTDOWN_SECONDS = 20


def serve(settings: Settings) -> int:
    configure_logging(settings)
    log = structlog.get_logger("handshake")
    try:
        tokens = load_tokens(settings)
        active = load_active(settings)  # fail before binding, listing every problem
    except SettingsError as exc:
        log.error("not_started", reason=str(exc))
        return 2
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("policy_problem", problem=str(problem))
        count = len(exc.problems)
        many = f"{count} problem{'' if count == 1 else 's'}"
        log.error("not_started", reason=f"{many} in {settings.policies}")
        return 2
    policy_set = active.policy_set
    for warning in (*policy_set.warnings, *active.webhooks.warnings):
        log.warning("policy_warning", problem=str(warning))
    for event, fields in startup_warnings(settings, tokens.required):
        log.warning(event, **fields)
    _export(settings)
    url = _url(settings.host, settings.port)
    log.info(
        "starting",
        url=url,
        docs=f"{url}/docs",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        authentication=tokens.required,
        policies=len(policy_set.policies),
        cel_engine=policy_set.engine,
        webhook_sources=len(active.webhooks.sources),
        revision=policy_set.revision,
        digest=policy_set.digest,
    )
    options: dict[str, Any] = {
        "factory": True,
        "http": functools.partial(  # what one client can cost (docs/adr/0013)
            BoundedHttpToolsProtocol,
            limits=Limits(
                header_seconds=settings.header_timeout_seconds,
                body_seconds=settings.body_timeout_seconds,
                response_seconds=settings.body_timeout_seconds,
                max_connections=settings.max_connections,
            ),
        ),
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "access_log": False,  # one structured event per request comes from the app itself
        "log_level": "warning",
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    target = "service.server:app_from_environment"
    if settings.workers > 1:
        del active, policy_set  # each worker compiles its own; the supervisor serves nothing
        gc.collect()
        uvicorn.run(target, **options)  # uvicorn's supervisor; drain with a preStop hook
    else:
        _LOADED.append(active)  # the worker is this process: it serves what was checked
        del active, policy_set
        DrainingServer(uvicorn.Config(target, **options), settings.shutdown_delay_seconds).run()
    return 0


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM: report not-ready, keep serving for `delay` seconds (so load
    balancers stop sending), then shut down as uvicorn does: stop accepting, finish in-flight
    requests, exit. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, delay: float) -> None:
        super().__init__(config)
        self.delay = delay
        self.exit_at: float | None = None
        self.announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it interrupts the main thread anywhere, possibly inside a log
        # call that holds structlog's (non-reentrant) output lock. So it only sets flags;
        # logging from here can deadlock the worker. The loop's next tick announces it.
        if self.delay <= 0 or self.exit_at is not None:
            super().handle_exit(sig, frame)
            return
        self.exit_at = time.monotonic() + self.delay
        for app in _APPS:
            app.state.handshake.draining = True

    async def on_tick(self, counter: int) -> bool:
        if self.exit_at is not None:
            if not self.announced:
                self.announced = True
                structlog.get_logger("handshake").info("draining", seconds=self.delay)
            if time.monotonic() >= self.exit_at:
                self.should_exit = True
        return await super().on_tick(counter)


def startup_warnings(settings: Settings, authenticated: bool) -> list[tuple[str, dict[str, str]]]:
    """Loud warnings for configurations that are fine on a laptop and not beyond it."""
    if authenticated or _loopback(settings.host):
        return []
    return [
        (
            "NO_AUTHENTICATION",
            {
                "host": settings.host,
                "detail": "the API is open to anyone who can reach this address: set "
                "HANDSHAKE_API_TOKENS or HANDSHAKE_API_TOKENS_FILE",
            },
        )
    ]


def _url(host: str, port: int) -> str:
    """Where to reach the server: a wildcard address is reached on this host's loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _export(settings: Settings) -> None:
    """Workers are separate processes: they read the same settings from the environment."""
    for field in settings.__struct_fields__:
        value = getattr(settings, field)
        if value is not None:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            os.environ[PREFIX + field.upper()] = text


_APPS: list[Litestar] = []  # the app(s) of this process, for DrainingServer
# What `serve` loaded to fail before binding, handed to the app when it runs in this process
# (one worker), so that the policies are compiled, and held, once.
_LOADED: list[Active] = []


def app_from_environment() -> Litestar:
    """The ASGI app of one worker process."""
    settings = load_settings()
    configure_logging(settings)
    # `kill -USR1 <pid>`: every thread's stack on stderr, for a worker that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app = create_app(settings, _LOADED.pop() if _LOADED else None)
    _APPS.append(app)
    # What is built by now lives as long as the worker (modules, the app, the compiled
    # policies): out of the cyclic collector's way, a full collection under load takes ~3 ms
    # instead of ~35 (bench/README.md). A policy set replaced by a reload has no reference
    # cycles, so it is still freed when dropped (tests/api/test_reload.py).
    gc.collect()
    gc.freeze()
    return app
