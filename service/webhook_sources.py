"""Webhook sources: configuration, secrets, and signature verification.

Sources live in a YAML document of `kind: WebhookSources` (by default `webhooks.yaml` in the
policy directory, so it is versioned, reviewed, reloaded and checked with the policies; the
policy loader skips it). Secrets are never in the YAML: each names an environment variable
or a file, and several may be listed so keys can be rotated. A source none of whose secrets
is set rejects every delivery (and `check` warns).

Two schemes: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`:
HMAC-SHA256 over `id.timestamp.body` with a `whsec_` secret; timestamps outside the tolerance,
past or future, are refused) and GitHub-style (`X-Hub-Signature-256: sha256=<hex>` over the
body). Every comparison is constant-time over bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from service.policy import PolicyError, Problem
from service.policy.cel import forget
from service.policy.engines import get_engine
from service.policy.errors import did_you_mean
from service.policy.loader import validate
from service.policy.mapping import RequestMapping, compile_mapping
from service.policy.model import Locale, PolicyName
from service.policy.parts import Site
from service.policy.request import Base
from service.policy.source import read_source
from service.settings import is_placeholder

__all__ = [
    "SignatureError",
    "Verified",
    "WebhookSource",
    "Webhooks",
    "load_webhooks",
    "verify",
]

KIND = "WebhookSources"
MAX_SIGNATURES = 10  # entries checked per delivery: bounds the work a request can cause
MAX_HEADER = 4096

SourceName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class SecretRef(Base, frozen=True, kw_only=True):
    """Where a secret is: an environment variable or a file (never the YAML itself)."""

    env: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret names exactly one of `env` or `file`")
        if self.env and self.env.startswith("HANDSHAKE_"):
            raise ValueError("`HANDSHAKE_*` variables are settings; name secrets otherwise")


class SourceConfig(Base, frozen=True, kw_only=True):
    scheme: Literal["standard-webhooks", "github"]
    secrets: Annotated[list[SecretRef], msgspec.Meta(min_length=1, max_length=10)]
    policy: PolicyName | None = None  # else the default policy
    locale: Locale | None = None
    id_header: str = "x-github-delivery"  # github: the delivery id, for the decision id
    mapping: dict[str, Any]


class WebhooksDocument(Base, frozen=True, kw_only=True):
    api_version: Literal["handshake/v1"] = msgspec.field(name="apiVersion")
    kind: Literal["WebhookSources"]
    sources: dict[SourceName, SourceConfig]


@dataclass(frozen=True)
class WebhookSource:
    name: str
    scheme: str
    secrets: tuple[bytes, ...]
    policy: str
    locale: str | None
    id_header: str
    mapping: RequestMapping


@dataclass(frozen=True)
class Webhooks:
    sources: Mapping[str, WebhookSource] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()


def load_webhooks(
    path: Path,
    policies: Collection[str],
    engine_name: str,
    default_policy: str,
    environ: Mapping[str, str] | None = None,
    elsewhere: Collection[str] = (),
) -> Webhooks:
    """Load and compile the sources for the `policies` (names) loaded under `engine_name`;
    raise `PolicyError` listing every problem. Sources for the policies `elsewhere` (served by
    another Deployment: HANDSHAKE_SERVE_ONLY) are left out."""
    environ = os.environ if environ is None else environ
    source = read_source(path, str(path))
    document, problems = validate(source, WebhooksDocument, _source_parts)
    if document is None:
        raise PolicyError(problems)
    engine = get_engine(engine_name)
    sources: dict[str, WebhookSource] = {}
    for name, config in document.sources.items():
        site = Site(source, ("sources", name))
        policy = config.policy or default_policy
        if policy not in policies and policy in elsewhere:
            continue
        if policy not in policies:
            hint = did_you_mean(policy, policies)
            problems.append(
                source.problem((*site.path, "policy"), f"unknown policy `{policy}`{hint}")
            )
        mapping, found = compile_mapping(config.mapping, site.at("mapping"), engine)
        problems.extend(found)
        secrets = []
        for index, ref in enumerate(config.secrets):
            secret, problem = _secret(ref, config.scheme, environ)
            if problem:
                problems.append(source.problem((*site.path, "secrets", index), problem))
            elif secret is not None:
                secrets.append(secret)
        if not secrets:
            problems.append(
                source.problem(
                    (*site.path, "secrets"),
                    f"source `{name}` has none of its secrets set: every delivery will be refused",
                    severity="warning",
                )
            )
        if mapping is not None:
            sources[name] = WebhookSource(
                name=name,
                scheme=config.scheme,
                secrets=tuple(secrets),
                policy=policy,
                locale=config.locale,
                id_header=config.id_header.lower(),
                mapping=mapping,
            )
    forget()  # what this load worked out per text (cel/memo.py)
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return Webhooks(sources=sources, warnings=tuple(problems))


def _source_parts(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], Any, type]]:
    sources = data.get("sources")
    if not isinstance(sources, dict):
        return []
    return [(("sources", str(name)), config, SourceConfig) for name, config in sources.items()]


def _secret(
    ref: SecretRef, scheme: str, environ: Mapping[str, str]
) -> tuple[bytes | None, str | None]:
    """(the key, None), (None, None) when unset, or (None, a problem)."""
    if ref.env is not None:
        text = environ.get(ref.env)
        if not text:
            return None, None
    else:
        try:
            text = Path(ref.file or "").read_text(encoding="utf-8").strip()
        except OSError:
            return None, None
    if is_placeholder(text):
        return None, f"secret from `{ref.env or ref.file}` is a placeholder: set a real one"
    if scheme == "github":
        return text.encode(), None
    try:  # Standard Webhooks: `whsec_` + base64 of the key
        key = base64.b64decode(text.removeprefix("whsec_") + "==", validate=False)
    except (binascii.Error, ValueError):
        return None, f"secret from `{ref.env or ref.file}` is not `whsec_<base64>`"
    return (key, None) if key else (None, f"secret from `{ref.env or ref.file}` is empty")


class SignatureError(Exception):
    """A delivery that is not verified; one of a fixed set of reasons (all 401)."""

    REASONS = {
        "missing-header": "a signature header is missing",
        "malformed-header": "a signature header is malformed",
        "no-matching-signature": "no signature matches",
        "timestamp-out-of-tolerance": "the timestamp is too old or too far in the future",
    }

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Verified:
    webhook_id: str
    timestamp: datetime | None  # Standard Webhooks only


Headers = Sequence[tuple[bytes, bytes]]


def verify(
    source: WebhookSource, headers: Headers, body: bytes, *, now: datetime, tolerance: int
) -> Verified:
    """Check a delivery's signature; raises `SignatureError`."""
    if source.scheme == "github":
        return _verify_github(source, headers, body)
    return _verify_standard(source, headers, body, now, tolerance)


def _verify_standard(
    source: WebhookSource, headers: Headers, body: bytes, now: datetime, tolerance: int
) -> Verified:
    webhook_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError(
            "malformed-header", "`webhook-timestamp` is not a Unix time in seconds"
        )
    timestamp = int(stamp)
    if abs(now.timestamp() - timestamp) > tolerance:
        raise SignatureError(
            "timestamp-out-of-tolerance",
            f"`webhook-timestamp` is more than {tolerance} s away from the server's clock",
        )
    signed = f"{webhook_id}.{stamp}.".encode() + body
    offered = []
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            raise SignatureError("malformed-header", "`webhook-signature` is not `v1,<base64>`")
        offered.append(decoded)
    if not offered:
        raise SignatureError("malformed-header", "`webhook-signature` has no `v1,<base64>` entry")
    if not _matches(source.secrets, signed, offered):
        raise SignatureError("no-matching-signature", "no `webhook-signature` entry matches")
    return Verified(webhook_id, datetime.fromtimestamp(timestamp, UTC))


def _verify_github(source: WebhookSource, headers: Headers, body: bytes) -> Verified:
    signature = _header(headers, "x-hub-signature-256")
    scheme, _, value = signature.partition("=")
    try:
        offered = bytes.fromhex(value) if scheme == "sha256" else b""
    except ValueError:
        offered = b""
    if len(offered) != hashlib.sha256().digest_size:
        raise SignatureError("malformed-header", "`X-Hub-Signature-256` is not `sha256=<hex>`")
    if not _matches(source.secrets, body, [offered]):
        raise SignatureError("no-matching-signature", "`X-Hub-Signature-256` does not match")
    webhook_id = _header(headers, source.id_header, required=False)
    return Verified(webhook_id or hashlib.sha256(body).hexdigest(), None)


def _matches(secrets: Sequence[bytes], message: bytes, offered: Sequence[bytes]) -> bool:
    """Any secret, any offered signature; compares every pair (constant-time each)."""
    found = False
    for secret in secrets:
        expected = hmac.new(secret, message, hashlib.sha256).digest()
        for candidate in offered:
            found |= hmac.compare_digest(expected, candidate)
    return found


def _header(headers: Headers, name: str, *, required: bool = True) -> str:
    """One header's value; missing, repeated, non-ASCII or huge values are rejections."""
    values = [value for key, value in headers if key.lower() == name.encode()]
    if not values:
        if not required:
            return ""
        raise SignatureError("missing-header", f"`{name}` is missing")
    if len(values) > 1:
        raise SignatureError("malformed-header", f"`{name}` appears more than once")
    value = values[0]
    if len(value) > MAX_HEADER:
        raise SignatureError("malformed-header", f"`{name}` is longer than {MAX_HEADER} bytes")
    try:
        return value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SignatureError("malformed-header", f"`{name}` is not ASCII") from None
