"""The OpenAPI document: litestar's paths and responses, msgspec's schemas.

litestar builds the paths, operations and response entries from the route handlers. The
component schemas are replaced by msgspec's own JSON Schema of the same Structs, the single
source of truth for validation (it says `additionalProperties: false` where msgspec forbids
unknown fields; litestar's generator does not). The request bodies, which the handlers decode
themselves, are declared here. The result is served at /openapi.json, shown at /docs and
committed at openapi/openapi.yaml (`handshake openapi`).
"""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml
from litestar import Litestar, Request
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from service.api.auth import SECURITY_SCHEME
from service.api.problems import Problem
from service.api.schemas import BatchResult, EvaluateBody, Health, PolicyDetail, PolicyList
from service.api.state import ReloadStatus
from service.policy.decision import Decision

__all__ = ["ASSETS", "ContractJson", "ContractSwaggerUI", "Dumper", "contract", "swagger_ui_files"]

_REF = "#/components/schemas/{name}"
_SHAPED = frozenset(("properties", "additionalProperties"))  # an object that is not free-form


def contract(app: Litestar, *, committed: bool = False) -> dict[str, Any]:
    """The document for this app (computed once, then kept in the app's state).

    Served, it says exactly what this app needs: a token where it requires one, none (`[]`)
    where it does not, so a server on its defaults asks for none. `committed`: the document
    of every deployment (openapi/openapi.yaml): the guarded operations take the document's
    `security`, a token or none where authentication is off (`[{bearerAuth: []}, {}]`), so
    generated clients take a plain client as well as an authenticated one."""
    cached: dict[str, Any] | None = app.state.get("openapi")
    if cached is not None and not committed:
        return cached
    batch = app.state.handshake.batch_body
    document = app.openapi_schema.to_schema()
    bodies = {"evaluate": EvaluateBody, "evaluateBatch": batch}
    examples = request_examples()
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
                        "application/json": {
                            "schema": {"$ref": _REF.format(name=kind.__name__)},
                            "examples": examples[operation["operationId"]],
                        }
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
            "description": (
                "HANDSHAKE_API_TOKENS / HANDSHAKE_API_TOKENS_FILE: required unless the "
                "deployment turns authentication off (HANDSHAKE_AUTHENTICATION=none)"
            ),
        }
    }
    state = app.state.handshake
    required = state.tokens.required
    if committed:  # for the guarded operations, which say nothing of their own
        document["security"] = [{SECURITY_SCHEME: []}, {}]
    for path_item in document["paths"].values():
        for operation in path_item.values():
            guarded = "401" in operation["responses"] and operation["operationId"] != "webhook"
            if operation["operationId"] == "metrics" and not committed:
                guarded = state.settings.metrics_require_token
            if not guarded:
                operation["security"] = []
            elif not committed:
                operation["security"] = [{SECURITY_SCHEME: []}] if required else []
    document["info"]["license"] = {"name": "Apache-2.0", "identifier": "Apache-2.0"}
    _for_generators(document)
    if not committed:
        app.state.openapi = document
    return document


def _for_generators(document: dict[str, Any]) -> None:
    """What client generators read literally, said their way (tests/api/test_client.py):
    - a default is said in words (`description`), not as `default`: openapi-typescript makes
      every field with a default required, in requests too;
    - a free-form object says `additionalProperties: true` (else `Record<string, never>`);
    - `Decision` is `DecisionResult`: a model named like one of its fields shadows it in
      openapi-python-client's `from_dict`."""
    schemas = document["components"]["schemas"]
    schemas["DecisionResult"] = {**schemas.pop("Decision"), "title": "DecisionResult"}
    renamed = {_REF.format(name="Decision"): _REF.format(name="DecisionResult")}

    def shape(schema: Any) -> None:
        if not isinstance(schema, dict):
            return
        if "default" in schema:
            default = schema.pop("default")
            if default not in (None, [], {}):
                said = f"Default: `{json.dumps(default)}`."
                text = schema.get("description", "").rstrip()
                stop = "" if not text or text.endswith(".") else "."
                schema["description"] = f"{text}{stop} {said}".strip()
        if schema.get("type") == "object" and schema.keys().isdisjoint(_SHAPED):
            schema["additionalProperties"] = True
        for key in ("items", "additionalProperties", "not"):
            shape(schema.get(key))
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for inner in schema.get(key, ()):
                shape(inner)
        for inner in schema.get("properties", {}).values():
            shape(inner)

    def rename(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in renamed:
                node["$ref"] = renamed[node["$ref"]]
            for value in node.values():
                rename(value)
        elif isinstance(node, list):
            for value in node:
                rename(value)

    for schema in schemas.values():
        shape(schema)
    rename(document)


def request_examples() -> dict[str, dict[str, Any]]:
    """The bodies Swagger UI's "Try it out" starts from, per operation: each example request
    the package ships (examples/requests), and all of them in one batch."""
    folder = resources.files("service.examples") / "requests"
    requests = {
        entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(".json")
    }
    return {
        "evaluate": {
            name: {"summary": f"examples/requests/{name}.json", "value": {"request": request}}
            for name, request in requests.items()
        },
        "evaluateBatch": {
            "all": {
                "summary": "every example request, one item each",
                "value": {"items": [{"request": request} for request in requests.values()]},
            }
        },
    }


_SIGNATURE_HEADERS = [
    ("webhook-id", "Standard Webhooks: the delivery id (retries repeat it)"),
    ("webhook-timestamp", "Standard Webhooks: Unix seconds; refused when too old or too new"),
    ("webhook-signature", "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256>`"),
    ("x-hub-signature-256", "GitHub-style: `sha256=<hex HMAC-SHA256 of the body>`"),
]


ASSETS = "/docs/assets"  # Swagger UI's files, from the swagger-ui-py package


def swagger_ui_files() -> Path:
    """Swagger UI's own files, as the pinned swagger-ui-py package ships them (found without
    importing it: its Python half serves other frameworks, and imports jinja2)."""
    spec = importlib.util.find_spec("swagger_ui")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise RuntimeError("swagger-ui-py, a dependency, is not installed")
    return Path(next(iter(locations))) / "static"


class ContractJson(JsonRenderPlugin):
    """/docs/openapi.json: the same document as /openapi.json (litestar's own is the raw one)."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, contract(request.app))


class ContractSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI at /docs, showing the same document as /openapi.json, its files served by
    this service (no CDN: /docs works offline and in clusters without egress)."""

    def __init__(self) -> None:
        super().__init__(
            path="/",
            js_url=f"{ASSETS}/swagger-ui-bundle.js",
            css_url=f"{ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, contract(request.app))


class Dumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, and no anchors (`&id001`) where a value repeats, so
    the committed file reads well in review."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _text)
