"""The OpenAPI document: litestar's paths and responses, msgspec's schemas.

litestar builds the paths, operations and response entries from the route handlers. The
component schemas are replaced by msgspec's own JSON Schema of the same Structs, the single
source of truth for validation (it says `additionalProperties: false` where msgspec forbids
unknown fields; litestar's generator does not). The request bodies, which the handlers decode
themselves, are declared here. The result is served at /openapi.json, shown at /docs and
committed at openapi/openapi.yaml (`handshake openapi`).
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml
from litestar import Litestar, Request
from litestar.openapi.plugins import SwaggerRenderPlugin

from service.api.auth import SECURITY_SCHEME
from service.api.problems import Problem
from service.api.schemas import BatchResult, EvaluateBody, Health, PolicyDetail, PolicyList
from service.api.state import ReloadStatus
from service.policy.decision import Decision

__all__ = ["ContractSwaggerUI", "Dumper", "contract"]

_REF = "#/components/schemas/{name}"


def contract(app: Litestar) -> dict[str, Any]:
    """The document for this app (computed once, then kept in the app's state)."""
    cached: dict[str, Any] | None = app.state.get("openapi")
    if cached is not None:
        return cached
    batch = app.state.handshake.batch_body
    document = app.openapi_schema.to_schema()
    bodies = {"evaluate": EvaluateBody, "evaluateBatch": batch}
    _, schemas = msgspec.json.schema_components(
        [
            *bodies.values(),
            Decision,
            BatchResult,
            PolicyList,
            PolicyDetail,
            Health,
            ReloadStatus,
            Problem,
        ],
        ref_template=_REF,
    )
    document.setdefault("components", {})["schemas"] = dict(sorted(schemas.items()))
    for path_item in document["paths"].values():
        for operation in path_item.values():
            kind = bodies.get(operation.get("operationId"))
            if kind is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(name=kind.__name__)}}
                    },
                }
    webhook = document["paths"].get("/webhooks/{source}", {}).get("post")
    if webhook is not None:
        webhook["requestBody"] = {
            "required": True,
            "description": "The sending service's own JSON payload; the source's mapping reads it",
            "content": {"application/json": {"schema": {}}},
        }
        webhook.setdefault("parameters", []).extend(
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
             "description": description}
            for name, description in _SIGNATURE_HEADERS
        )  # fmt: skip
    document["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "HANDSHAKE_API_TOKENS / HANDSHAKE_API_TOKENS_FILE; none: no auth",
        }
    }
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if "401" in operation["responses"] and operation.get("operationId") != "webhook":
                operation["security"] = [{SECURITY_SCHEME: []}]
    app.state.openapi = document
    return document


_SIGNATURE_HEADERS = [
    ("webhook-id", "Standard Webhooks: the delivery id (retries repeat it)"),
    ("webhook-timestamp", "Standard Webhooks: Unix seconds; refused when too old or too new"),
    ("webhook-signature", "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256>`"),
    ("x-hub-signature-256", "GitHub-style: `sha256=<hex HMAC-SHA256 of the body>`"),
]


class ContractSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at /docs, showing the same document as /openapi.json."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, contract(request.app))


class Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the committed file reads well in review."""


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _text)
