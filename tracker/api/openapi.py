"""The OpenAPI 3.1 document, generated from what the routes say about themselves.

Every ``ApiRoute`` carries an ``Operation`` (``tracker.api.endpoints``): body and
query models, answer models per status, error statuses, security. The generator
walks the app's routes, adds what the app answers before routing (the redirect,
``TrackerStarlette.unrouted``), and takes the component schemas from the
pydantic models: validation mode for what a route accepts, serialization mode
for what it answers. The handlers validate and answer with the same models, so
the document says what the code does.

``openapi.json`` at the repository root is this document, committed; regenerate
it with ``python -m tracker.api.openapi > openapi.json`` (a test fails when it
differs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, RootModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from tracker import __version__
from tracker.api.endpoints import Operation, Unrouted, api, operations
from tracker.api.schema import Error

Schema = dict[str, Any]
# (model, mode) -> {"$ref": ...}, as pydantic's models_json_schema answers.
Refs = Mapping[tuple[Any, Any], Schema]
REF = "#/components/schemas/"

ERROR_STATUSES: dict[int, str] = {
    400: "The request is malformed (bad JSON, bad parameter); the message names the value.",
    401: "Missing or wrong credentials.",
    403: "The credentials may not do this (e.g. a brand key on an admin route, an IP not allowed).",
    404: "Not found, or owned by another brand.",
    405: "Method not allowed on this path.",
    409: "Conflicts with the current state (e.g. a status move that is not allowed).",
    410: "The link is disabled or expired.",
    413: "The request body is too large.",
    415: "The body is not JSON.",
    422: "Well-formed but not acceptable (e.g. a currency without an exchange rate).",
    429: "Rate limited (e.g. too many unknown short codes from one address); retry after Retry-After.",
    503: "A backend is unavailable; retry after the Retry-After header.",
}

SECURITY_SCHEMES: dict[str, Schema] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "TRACKER_ADMIN_TOKEN: may create and list brands.",
    },
    "brandKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A brand API key of scope `write` (every brand route; the key of POST /api/v1/brands "
        "is one) or `read` (the brand's GET routes only; anything else answers 403). Instead of the header, the "
        "brand app's session cookie `trk_app` (POST /app/signin) acts with the key it was opened with; every "
        "change made with it needs the `X-CSRF-Token` header.",
    },
    "influencerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of scope `influencer`: only that influencer's own data.",
    },
    "portalSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "trk_portal",
        "description": "The influencer portal's session cookie, set by following a portal sign-in link.",
    },
    "appSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "trk_app",
        "description": "The brand app's session cookie (POST /app/signin); changes also need X-CSRF-Token.",
    },
    "storeId": {"type": "apiKey", "in": "header", "name": "X-Store-Id"},
    "storeSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "t=<unix>,v1=<hex HMAC-SHA256(secret, f'{t}.{raw body}')>, t within 300 s.",
    },
    "storeToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The store's postback_token (GET /postback), with store_id beside it.",
    },
}
# Who may call (Operation.security) -> the OpenAPI security requirement.
REQUIREMENTS: dict[str, dict[str, list[str]]] = {
    "admin": {"adminToken": []},
    "brand": {"brandKey": []},
    "influencer": {"influencerKey": []},
    "session": {"portalSession": []},
    "app_session": {"appSession": []},
    "store_signature": {"storeId": [], "storeSignature": []},
    "store_token": {"storeToken": []},
}
# A path parameter an Operation does not describe: an opaque id.
DEFAULT_PATH_PARAM: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z_]+)?\}")


class OpenAPIDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


def _requirement(security: str) -> dict[str, list[str]]:
    try:
        return REQUIREMENTS[security]
    except KeyError:
        raise KeyError(f"Security {security!r} has no OpenAPI scheme: add it to tracker/api/openapi.py.") from None


def _unrouted(app: Starlette) -> Iterator[tuple[str, str, Operation]]:
    for unrouted in getattr(app, "unrouted", ()):
        assert isinstance(unrouted, Unrouted)
        yield unrouted.path, unrouted.method, unrouted.operation


def _models(ops: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Error, "serialization"): None}
    for op in ops:
        for model in (op.body, op.query):
            if model is not None:
                wanted[(model, "validation")] = None
        for answer in op.answers.values():
            if answer is not None:
                wanted[(answer, "serialization")] = None
    return list(wanted)


def _query_parameters(model: type[BaseModel], ref: Mapping[str, Any], schemas: Mapping[str, Schema]) -> list[Schema]:
    schema = schemas[ref["$ref"].removeprefix(REF)]
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        value = {k: v for k, v in prop.items() if k not in ("title", "description")}
        param: Schema = {"name": name, "in": "query", "required": name in required, "schema": value}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _responses(op: Operation, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in sorted({*op.answers, *op.also, *op.errors}):
        if status in op.errors and status not in op.answers:
            description = ERROR_STATUSES.get(status, HTTPStatus(status).phrase)
            response: dict[str, Any] = {
                "description": description,
                "content": {"application/json": {"schema": refs[(Error, "serialization")]}},
            }
        else:
            response = {"description": HTTPStatus(status).phrase}
            content: dict[str, Any] = {}
            model = op.answers.get(status)
            if model is not None:
                content["application/json"] = {"schema": refs[(model, "serialization")]}
            if status in op.also:
                content[op.also[status]] = {"schema": {"type": "string"}}
            if content:
                response["content"] = content
        if status in op.headers:
            response["headers"] = {name: {"schema": dict(s)} for name, s in op.headers[status].items()}
        out[str(status)] = response
    return out


def _operation(
    path: str, op: Operation, refs: Refs, schemas: Mapping[str, Schema]
) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        out["description"] = op.description
    out["tags"] = [op.tag]
    out["security"] = [_requirement(s) for s in op.security]
    params: list[Schema] = [
        {"name": name, "in": "path", "required": True, "schema": dict(op.path_params.get(name, DEFAULT_PATH_PARAM))}
        for name in _PARAM.findall(path)
    ]
    if op.query is not None:
        params += _query_parameters(op.query, refs[(op.query, "validation")], schemas)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
        if op.form_too:
            out["requestBody"]["content"]["application/x-www-form-urlencoded"] = {
                "schema": refs[(op.body, "validation")]}
    out["responses"] = _responses(op, refs)
    return out


def _refs_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF):
            yield ref.removeprefix(REF)
        for item in value.values():
            yield from _refs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs_in(item)


def _reachable(roots: Any, schemas: Mapping[str, Schema]) -> list[str]:
    """Names of the component schemas ``roots`` refers to, directly or through other schemas."""
    seen: dict[str, None] = {}
    todo = list(_refs_in(roots))
    while todo:
        name = todo.pop()
        if name not in seen and name in schemas:
            seen[name] = None
            todo.extend(_refs_in(schemas[name]))
    return sorted(seen)


def document(app: Starlette) -> dict[str, Any]:
    routed, unrouted = list(operations(app.routes)), list(_unrouted(app))
    refs, top = models_json_schema(_models(op for _, _, op in routed + unrouted), ref_template=REF + "{model}")
    generated: dict[str, Schema] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}

    def add(path: str, method: str, op: Operation) -> None:
        doc_path = _PARAM.sub(r"{\1}", path)
        paths.setdefault(doc_path, {})[method.lower()] = _operation(doc_path, op, refs, generated)

    for path, method, op in (*routed, *unrouted):
        add(path, method, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": __version__,
            "description": "Self-hosted affiliate-link and conversion tracking server. Money travels as "
            'decimal strings; errors answer {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": {name: generated[name] for name in _reachable(paths, generated)},
        },
    }


def render(doc: Mapping[str, Any]) -> str:
    """The committed form: indented, one trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


async def openapi_json(request: Request) -> Response:
    app = request.app
    body: bytes | None = getattr(app.state, "openapi_json", None)
    if body is None:
        body = app.state.openapi_json = json.dumps(document(app), separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


ROUTE = api(
    "GET",
    "/openapi.json",
    Operation("This document.", "operations", answers={200: OpenAPIDocument}, operation_id="openapi"),
)(openapi_json)


if __name__ == "__main__":
    import sys

    from tracker.app import create_app
    from tracker.settings import Settings

    sys.stdout.write(render(document(create_app(Settings()))))
