"""Bearer tokens for the API: several at once (rotation), from the environment or a file.

Tokens are kept only as SHA-256 digests and compared in constant time against every configured
one. A caller is named by the token's name (`name:token`), else by a short digest prefix —
never by the token. Health, the OpenAPI document and webhooks (signed) stay open; /metrics is
guarded when `metrics_require_token` is on.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from service.api.observability import note
from service.api.problems import problem
from service.settings import Settings, SettingsError

__all__ = [
    "SECURITY_SCHEME",
    "Tokens",
    "authenticate",
    "caller",
    "identify",
    "load_tokens",
    "remember_caller",
    "require_token",
]

SECURITY_SCHEME = "bearerAuth"
MIN_LENGTH = 16
_CALLER = "handshake.caller"


@dataclass(frozen=True)
class Tokens:
    entries: tuple[tuple[str, bytes], ...] = ()  # (caller name, sha256 of the token)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def identify(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, expected in self.entries:  # no early exit: the same work for every token
            if hmac.compare_digest(expected, digest):
                found = name
        return found


def load_tokens(settings: Settings) -> Tokens:
    """The configured tokens; raises `SettingsError` (one line) for a bad one."""
    entries = re.split(r"[,\s]+", settings.api_tokens or "")
    if settings.api_tokens_file:
        try:
            entries += Path(settings.api_tokens_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SettingsError(f"HANDSHAKE_API_TOKENS_FILE: cannot read: {exc.strerror}") from None
    tokens = []
    for entry in (e.strip() for e in entries):
        if not entry or entry.startswith("#"):
            continue
        name, _, token = entry.rpartition(":")
        if len(token) < MIN_LENGTH:
            raise SettingsError(f"API tokens must have at least {MIN_LENGTH} characters")
        digest = hashlib.sha256(token.encode()).digest()
        tokens.append((name or f"token-{digest.hex()[:8]}", digest))
    return Tokens(tuple(tokens))


async def require_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: 401 (a problem document with `WWW-Authenticate`) without a valid bearer token.

    Async although it never awaits: litestar runs a sync guard in a worker thread."""
    state = connection.app.state.handshake
    if handler.opt.get("metrics") and not state.settings.metrics_require_token:
        return
    authenticate(connection)


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """401 unless the request carries a valid bearer token (when tokens are configured)."""
    tokens: Tokens = connection.app.state.handshake.tokens
    if tokens.enabled:
        remember_caller(connection.scope, identify(tokens, connection.headers.get("authorization")))


def identify(tokens: Tokens, authorization: str | None) -> str:
    """The caller named by an `Authorization` header's bearer token; 401 problem otherwise."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise problem(
            401,
            "send `Authorization: Bearer <token>`",
            code=("missing-token", "Authentication required"),
            headers={"WWW-Authenticate": 'Bearer realm="handshake"'},
        )
    name = tokens.identify(presented.strip())
    if name is None:
        raise problem(
            401,
            "the bearer token is not valid",
            code=("invalid-token", "Authentication required"),
            headers={"WWW-Authenticate": 'Bearer realm="handshake", error="invalid_token"'},
        )
    return name


def remember_caller(scope: Any, name: str) -> None:
    scope.setdefault("state", {})[_CALLER] = name
    note(scope, caller=name)


def caller(scope: Any) -> str:
    """Who called: a token's name, or `anonymous` when authentication is off."""
    return str(scope.get("state", {}).get(_CALLER, "anonymous"))
