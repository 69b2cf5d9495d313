"""Bearer tokens for the API: several at once (rotation), from the environment or a file.

Tokens are kept only as SHA-256 digests and compared in constant time against every configured
one. A caller is named by the token's name (`name:token`), else by a short digest prefix —
never by the token. A token may carry scopes (`name:token:evaluate=sales/**,admin`, see
scopes.py); without them it may do everything. Health, the OpenAPI document and webhooks
(signed) stay open; /metrics is guarded when `metrics_require_token` is on.
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
from service.api.scopes import Action, OutOfScope, Scopes, is_clause, parse_scopes, source_scopes
from service.policy import PolicySet, UnknownPolicyError
from service.policy.compiled import CompiledPolicy
from service.settings import Settings, SettingsError, is_placeholder

__all__ = [
    "SECURITY_SCHEME",
    "Grant",
    "Tokens",
    "authenticate",
    "authentication_on",
    "caller",
    "identify",
    "load_source_scopes",
    "load_tokens",
    "permit",
    "permit_source",
    "permitted",
    "policy_for",
    "remember_caller",
    "require_token",
]

SECURITY_SCHEME = "bearerAuth"
MIN_LENGTH = 16
_CALLER = "handshake.caller"


@dataclass(frozen=True)
class Grant:
    """Who a caller is (a token's name) and what it may do (None: everything)."""

    name: str
    scopes: Scopes | None = None


@dataclass(frozen=True)
class Tokens:
    """The configured tokens. `required` comes from the settings alone: with it on and no
    entries (which loading never produces), every call is refused."""

    required: bool = False
    entries: tuple[tuple[Grant, bytes], ...] = ()  # (what it grants, sha256 of the token)

    def identify(self, presented: str) -> Grant | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for grant, expected in self.entries:  # no early exit: the same work for every token
            if hmac.compare_digest(expected, digest):
                found = grant
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
    entries = [("HANDSHAKE_API_TOKENS", e) for e in _listed(settings.api_tokens or "")]
    if settings.api_tokens_file:
        where = "HANDSHAKE_API_TOKENS_FILE"
        try:
            text = Path(settings.api_tokens_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise SettingsError(f"{where}: cannot read: {reason}") from None
        entries += [(f"{where}:{n}", line) for n, line in enumerate(text.splitlines(), 1)]
    tokens: list[tuple[Grant, bytes]] = []
    for where, entry in ((w, e.strip()) for w, e in entries):
        if not entry or entry.startswith("#"):
            continue
        fields = entry.split(":")
        if len(fields) > 3:
            raise SettingsError(f"{where}: an entry is `name:token` or `name:token:scopes`")
        name, token, written = ((["", *fields] if len(fields) == 1 else fields) + [""])[:3]
        if is_clause(token):  # fails closed: never a token that may do everything
            raise SettingsError(
                f"{where}: `{token}` is a scope, not a token: scopes follow their token, "
                "`name:token:evaluate=a/**,read=a/**`, after commas and without spaces"
            )
        if len(fields) == 3 and not written:
            raise SettingsError(f"{where}: `{name}` has an empty list of scopes")
        try:
            scopes = parse_scopes(written) if written else None
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        if len(token) < MIN_LENGTH:
            raise SettingsError(f"{where}: API tokens must have at least {MIN_LENGTH} characters")
        if is_placeholder(token):
            raise SettingsError(f"{where}: a placeholder token (`REPLACE-WITH-…`): set a real one")
        digest = hashlib.sha256(token.encode()).digest()
        if any(digest == known for _, known in tokens):
            raise SettingsError(f"{where}: the same token is listed twice")
        tokens.append((Grant(name or f"token-{digest.hex()[:8]}", scopes), digest))
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
    action = handler.opt.get("scope")
    if action == "metrics" and not state.settings.metrics_require_token:
        return
    authenticate(connection)
    if action in ("metrics", "admin"):
        permit(connection.scope, action)


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """401 unless the request carries a valid bearer token (when authentication is on)."""
    tokens: Tokens = connection.app.state.handshake.tokens
    if tokens.required:
        remember_caller(connection.scope, identify(tokens, connection.headers.get("authorization")))


def identify(tokens: Tokens, authorization: str | None) -> Grant:
    """The caller an `Authorization` header's bearer token names; 401 problem otherwise."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise problem(
            401,
            "send `Authorization: Bearer <token>`",
            code=("missing-token", "Authentication required"),
            headers={"WWW-Authenticate": 'Bearer realm="handshake"'},
        )
    grant = tokens.identify(presented.strip())
    if grant is None:
        raise problem(
            401,
            "the bearer token is not valid",
            code=("invalid-token", "Authentication required"),
            headers={"WWW-Authenticate": 'Bearer realm="handshake", error="invalid_token"'},
        )
    return grant


def remember_caller(scope: Any, grant: Grant) -> None:
    scope.setdefault("state", {})[_CALLER] = grant
    note(scope, caller=grant.name)


def caller(scope: Any) -> str:
    """Who called: a token's name, or `anonymous` when authentication is off."""
    grant = scope.get("state", {}).get(_CALLER)
    return grant.name if grant is not None else "anonymous"


def permitted(scope: Any, action: Action, policy: str = "") -> bool:
    """Whether the caller may do `action` (on `policy`): always, but for a scoped token."""
    grant = scope.get("state", {}).get(_CALLER)
    return grant is None or grant.scopes is None or grant.scopes.allows(action, policy)


def permit(scope: Any, action: Action, policy: str = "") -> None:
    """`OutOfScope` (403) unless the caller may do `action` (on `policy`)."""
    if not permitted(scope, action, policy):
        grant = scope["state"][_CALLER]
        what = f"{action} `{policy}`" if policy else action
        raise OutOfScope(
            f"the token `{grant.name}` may not {what} (its scopes: {grant.scopes.written})"
        )


def load_source_scopes(settings: Settings) -> dict[str, Scopes] | None:
    """The policies each webhook source may evaluate (HANDSHAKE_WEBHOOK_SCOPES; None: no
    limit); raises `SettingsError` (one line) for a bad entry."""
    try:
        return source_scopes(settings.webhook_scopes)
    except ValueError as exc:
        raise SettingsError(f"HANDSHAKE_WEBHOOK_SCOPES: {exc}") from None


def permit_source(scopes: dict[str, Scopes] | None, source: str, policy: str) -> None:
    """`OutOfScope` (403) unless the webhook source may evaluate `policy`: with the setting
    on, a source it does not name may evaluate none."""
    if scopes is not None and not (source in scopes and scopes[source].allows("evaluate", policy)):
        raise OutOfScope(
            f"the webhook source `{source}` may not evaluate `{policy}` (HANDSHAKE_WEBHOOK_SCOPES)"
        )


def _listed(text: str) -> list[str]:
    """The entries of HANDSHAKE_API_TOKENS: separated by commas or white space, but a scope
    clause after a comma (`…:evaluate=a/**,read=a/**`) belongs to the entry before it. A
    clause anywhere else stays an entry of its own, which `load_tokens` refuses."""
    entries: list[str] = []
    for item in re.split(r"\s+", text):
        for position, piece in enumerate(item.split(",")):
            scoped = bool(entries) and entries[-1].count(":") == 2
            if position and scoped and is_clause(piece):
                entries[-1] += "," + piece
            else:
                entries.append(piece)
    return entries


def policy_for(scope: Any, policy_set: PolicySet, action: Action, name: str) -> CompiledPolicy:
    """The policy `name`, which the caller may `action`: `OutOfScope` before any lookup (a
    scope does not tell which names exist beyond it), then `UnknownPolicyError`, whose "did
    you mean" names only policies the caller may `action`."""
    permit(scope, action, name)
    try:
        return policy_set.get(name)
    except UnknownPolicyError:
        near = [n for n in policy_set.neighbours(name) if permitted(scope, action, n)]
        raise UnknownPolicyError(name, near) from None
