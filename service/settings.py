"""One frozen Settings Struct, read from `HANDSHAKE_*` environment variables at start-up.

Every setting is `HANDSHAKE_<FIELD>` in upper case (`HANDSHAKE_MAX_BODY_BYTES=131072`). An
unknown `HANDSHAKE_*` variable is an error, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from service.policy.errors import did_you_mean

__all__ = ["CHOICES", "PREFIX", "Settings", "SettingsError", "is_placeholder", "load_settings"]

PREFIX = "HANDSHAKE_"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policies: str = "policies"
    """The policy directory."""
    serve_only: str | None = None
    """Serve only the policies whose names match these patterns, comma-separated (`*` also
    matches across folders: `teams/emea/*,default`): one of several Deployments that share a
    repository (docs/operations.md). The bases they extend are read wherever they are."""
    default_policy: str = "default"
    """The policy used when a request names none."""
    cel_engine: Literal["cel-expr-python", "cel-python"] = "cel-expr-python"
    """The CEL engine: Google's C++ CEL (fast) or cel-python, the reference (docs/adr/0009)."""
    revision: str | None = None
    """The policies' revision when the directory is not a git work tree (e.g. git-sync)."""
    watch: bool = True
    """Reload when files under the policy directory change (SIGHUP reloads too)."""
    shadow_policies: str | None = None
    """A candidate policy directory: every live decision is made again under it, off the
    answer's path, and disagreements are counted and logged (docs/policy-workflow.md)."""
    reload_requires_tests: bool = False
    """A reload goes live only if every test suite passes."""
    webhooks: str | None = None
    """The webhook sources file; by default `webhooks.yaml` in the policy directory, if any."""
    webhook_tolerance_seconds: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 300
    """How far a Standard Webhooks timestamp may be from the clock, past or future."""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    shutdown_delay_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 0
    """On SIGTERM, report not-ready and keep serving this long before draining and exiting,
    so load balancers stop sending new requests first (one worker; else use a preStop hook)."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    header_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10
    """A connection's request line and headers must arrive within this (else 408, closed); an
    idle connection is closed after it too."""
    body_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30
    """A request's body must arrive, and a client must read its answer, within this."""
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 512
    """Open connections per worker; past it, new ones are closed at once."""
    batch_max_items: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    authentication: Literal["tokens", "none"] | None = None
    """`tokens`: every API call needs a bearer token; `none`: no authentication (local use).
    Unset: `tokens` when `api_tokens` or `api_tokens_file` is set, else `none`. Never decided
    by what a tokens file holds: once on, a file that becomes empty or unreadable keeps the last
    good tokens (docs/operations.md)."""
    api_tokens: str | None = None
    """Bearer tokens for the API, `name:token` (or a bare token), separated by commas or spaces;
    `name:token:SCOPES` limits one (`evaluate=sales/**,read=sales/**,metrics,admin`)."""
    api_tokens_file: str | None = None
    """A file of tokens, one `name:token[:SCOPES]` a line; read again on every reload (rotation)."""
    webhook_scopes: str | None = None
    """The policies each webhook source may evaluate, `source=PATTERN`, comma-separated (a
    source may repeat). Set, a source it does not name may evaluate none (403 `out-of-scope`)."""
    metrics_require_token: bool = False
    """Guard /metrics with the API tokens too."""
    metrics_policies: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100
    """How many policies get series of their own in the decision metrics; decisions of the
    others are counted under `policy="_other"`, so /metrics stays small at any number of
    policies (0: none by name)."""
    capture_path: str | None = None
    """Append sampled requests, with no personal data, to this file as JSON lines that
    `handshake diff --requests` replays (docs/policy-workflow.md)."""
    capture_sample: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.01
    """The share of decisions whose request is captured."""
    capture_key: str | None = None
    """The secret key of the hashes that replace names, ids and companies (16+ characters)."""
    capture_attributes: str | None = None
    """The `attributes` keys a captured request keeps, comma-separated (default: none)."""
    capture_max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024 * 1024
    """Past this size, the capture file grows no more."""
    log_requester_hash_key: str | None = None
    """Add `requester_hash` (HMAC-SHA256 of the requester id with this key) to decision logs."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """`auto`: readable on a terminal, JSON otherwise."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_personal_data: bool = False
    """Add requester names to decision logs. Off: no note, name or attribute is ever logged."""


class SettingsError(ValueError):
    """A setting is unknown or invalid; the message is one line naming the variable."""


# The shapes of the placeholders in deploy/k8s/overlays/example and in common templates: a
# secret that still says so must never work as a real credential.
_PLACEHOLDER = re.compile(r"replace[-_]?with|change[-_]?me|placeholder|<[^>]*>", re.IGNORECASE)


def is_placeholder(secret: str) -> bool:
    """A secret copied from an example and never replaced (`REPLACE-WITH-…`, `changeme`)."""
    return _PLACEHOLDER.search(secret) is not None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then `overrides` (e.g. command-line flags) on top."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in msgspec.structs.fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX).lower()
        if name not in names:
            known = [PREFIX + n.upper() for n in names]
            raise SettingsError(f"unknown setting `{key}`{did_you_mean(key, known)}")
        values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        field = path.rstrip("`")
        name = PREFIX + field.upper() if path else "settings"
        if (bad := _BAD_CHOICE.match(message)) and field in CHOICES:
            choices = ", ".join(CHOICES[field])
            raise SettingsError(f"{name}: unknown value `{bad[1]}` (one of: {choices})") from None
        raise SettingsError(f"{name}: {message[:1].lower()}{message[1:]}") from None


_BAD_CHOICE = re.compile(r"^Invalid enum value '(.*)'$", re.DOTALL)


def _choices(kind: Any) -> list[str]:
    """The values a `Literal` allows, also inside `| None`."""
    if typing.get_origin(kind) is Literal:
        return [str(value) for value in typing.get_args(kind)]
    return next((found for a in typing.get_args(kind) if (found := _choices(a))), [])


# The allowed values of each setting that has a fixed set of them.
CHOICES = {f.name: c for f in msgspec.structs.fields(Settings) if (c := _choices(f.type))}
