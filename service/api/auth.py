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
from service.settings import Settings, SettingsError, is_placeholder

__all__ = [
    "SECURITY_SCHEME",
    "Tokens",
    "authenticate",
    "authentication_on",
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
    """The configured tokens. `required` comes from the settings alone: with it on and no
    entries (which loading never produces), every call is refused."""

    required: bool = False
    entries: tuple[tuple[str, bytes], ...] = ()  # (caller name, sha256 of the token)

    def identify(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, expected in self.entries:  # no early exit: the same work for every token
            if hmac.compare_digest(expected, digest):
                found = name
        return found


def authentication_on(settings: Settings) -> bool:
    """Whether API calls need a token: the setting, else whether a token source is configured."""
    if settings.authentication is not None:
        return settings.authentication == "tokens"
    return settings.api_tokens is not None or settings.api_tokens_file is not None


def load_tokens(settings: Settings) -> Tokens:
    """The configured tokens; raises `SettingsError` (one line) for a bad or missing one.

    With authentication on, a source that yields no token is an error, never "open"."""
    configured = settings.api_tokens is not None or settings.api_tokens_file is not None
    if not authentication_on(settings):
        if configured:
            raise SettingsError(
                "HANDSHAKE_AUTHENTICATION: `none`, but HANDSHAKE_API_TOKENS or "
                "HANDSHAKE_API_TOKENS_FILE is set; unset them or use `tokens`"
            )
        return Tokens()
    if not configured:
        raise SettingsError(
            "HANDSHAKE_AUTHENTICATION: `tokens` needs HANDSHAKE_API_TOKENS or "
            "HANDSHAKE_API_TOKENS_FILE"
        )
    entries = [("HANDSHAKE_API_TOKENS", e) for e in re.split(r"[,\s]+", settings.api_tokens or "")]
    if settings.api_tokens_file:
        where = "HANDSHAKE_API_TOKENS_FILE"
        try:
            text = Path(settings.api_tokens_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise SettingsError(f"{where}: cannot read: {reason}") from None
        entries += [(f"{where}:{n}", line) for n, line in enumerate(text.splitlines(), 1)]
    tokens = []
    for where, entry in ((w, e.strip()) for w, e in entries):
        if not entry or entry.startswith("#"):
            continue
        name, _, token = entry.rpartition(":")
        if len(token) < MIN_LENGTH:
            raise SettingsError(f"{where}: API tokens must have at least {MIN_LENGTH} characters")
        if is_placeholder(token):
            raise SettingsError(f"{where}: a placeholder token (`REPLACE-WITH-…`): set a real one")
        digest = hashlib.sha256(token.encode()).digest()
        tokens.append((name or f"token-{digest.hex()[:8]}", digest))
    if not tokens:
        raise SettingsError(
            "HANDSHAKE_API_TOKENS / HANDSHAKE_API_TOKENS_FILE hold no token, so authentication "
            "would refuse every call"
        )
    return Tokens(required=True, entries=tuple(tokens))


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
    """401 unless the request carries a valid bearer token (when authentication is on)."""
    tokens: Tokens = connection.app.state.handshake.tokens
    if tokens.required:
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
