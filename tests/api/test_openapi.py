"""The OpenAPI document: generated from the routes, committed, every route documented and every documented
path routed; schemas sound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tracker.api.openapi import document as generate
from tracker.api.openapi import render
from tracker.app import _routes, create_app
from tracker.redirect.handler import TrackerStarlette
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "options", "trace"}
COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


@cache
def document() -> dict[str, Any]:
    return generate(create_app(Settings()))


def app_operations() -> set[tuple[str, str]]:
    """(path, method) of every route; HEAD is implied by GET in both Starlette and OpenAPI."""
    ops: set[tuple[str, str]] = set()
    for route in _routes():
        if isinstance(route, Route):
            for method in route.methods or {"GET"}:
                if method != "HEAD":
                    ops.add((route.path, method.lower()))
        elif isinstance(route, Mount):
            # A static mount serves GET under its prefix; the document names its entry page.
            ops.add((route.path or "/", "get"))
        else:
            raise AssertionError(f"Route type {type(route).__name__} is not covered by this test.")
    # What the app answers ahead of the router (the redirect, GET/HEAD /{code}).
    ops |= {(u.path, u.method.lower()) for u in TrackerStarlette.unrouted}
    return ops


def documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_documented() -> None:
    missing = app_operations() - documented_operations()
    assert not missing, f"routes missing from the OpenAPI document (describe them with an ApiRoute): {sorted(missing)}"


def test_every_documented_operation_is_routed() -> None:
    extra = documented_operations() - app_operations()
    assert not extra, f"documented but not routed: {sorted(extra)}"


def test_document_loads_in_schemathesis() -> None:
    schema = schemathesis.openapi.from_dict(document())
    loaded = {(op.ok().path, op.ok().method.lower()) for op in schema.get_all_operations()}
    assert loaded == documented_operations()


def _validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator({**schema, "components": document()["components"]})


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def test_operation_ids_are_unique_and_every_operation_says_who_may_call() -> None:
    ids = [op["operationId"] for _, _, op in _operations()]
    assert len(ids) == len(set(ids))
    schemes = set(document()["components"]["securitySchemes"])
    for path, method, op in _operations():
        assert "security" in op, f"{method} {path} does not state its security"
        for requirement in op["security"]:
            assert set(requirement) <= schemes


@pytest.mark.parametrize(("path", "method", "op"), list(_operations()), ids=lambda v: str(v)[:40])
def test_every_schema_compiles_and_errors_use_the_error_body(path: str, method: str, op: dict[str, Any]) -> None:
    for content in op.get("requestBody", {}).get("content", {}).values():
        _validator(content["schema"])
    for status, response in op["responses"].items():
        for media, content in response.get("content", {}).items():
            _validator(content["schema"])
            if status.startswith("4") and media == "application/json":
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        ("Error", {"error": {"code": "not_found", "message": "No link 'x'."}}, True),
        ("Error", {"error": {"code": "not_found"}}, False),
        ("Error", {"message": "x"}, False),
        ("Conversion", {"conversion_id": "c1", "status": "approved", "attributed": False, "attribution": None,
                        "link_code": None, "influencer_id": None, "campaign_id": None, "commission": "0.00",
                        "duplicate": False}, True),
        ("Conversion", {"conversion_id": "c1", "status": "approved", "attributed": True, "attribution": "email",
                        "link_code": None, "influencer_id": None, "campaign_id": None, "commission": "0.00",
                        "duplicate": False}, False),
        ("Conversion", {"conversion_id": "c1", "status": "approved", "attributed": True, "attribution": "click",
                        "link_code": "a", "influencer_id": "i", "campaign_id": "c", "commission": 1.5,
                        "duplicate": False}, False),  # money is a decimal string
        ("NewBrand", {"id": "b1", "name": "Acme", "currency": "USD", "created_at": "2026-12-01T10:00:00.000Z",
                      "api_key": "k"}, True),
        ("NewBrand", {"id": "b1", "name": "Acme", "currency": "usd", "created_at": "2026-12-01T10:00:00.000Z",
                      "api_key": "k"}, False),
        ("Brand", {"id": "b1", "name": "Acme", "currency": "USD", "created_at": "2026-12-01T10:00:00.000Z"}, True),
        ("Brand", {"id": "b1", "name": "Acme", "currency": "USD", "api_key": "k"}, False),  # listed without keys
        ("Totals", {"clicks": 1}, False),
    ],
)
def test_component_schemas_accept_and_reject(schema: str, value: dict[str, Any], valid: bool) -> None:
    assert _validator({"$ref": f"#/components/schemas/{schema}"}).is_valid(value) is valid


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_committed_document_is_the_generated_one() -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    if committed != render(document()):
        old = json.loads(committed) if committed else {"paths": {}, "components": {"schemas": {}}}
        changed = sorted(
            {p for p in {*old["paths"], *document()["paths"]} if old["paths"].get(p) != document()["paths"].get(p)}
            | {f"schema {n}" for n in {*old["components"]["schemas"], *document()["components"]["schemas"]}
               if old["components"]["schemas"].get(n) != document()["components"]["schemas"].get(n)}
        )
        pytest.fail(
            "openapi.json differs from what the code generates"
            f" ({', '.join(changed[:10]) or 'info or formatting'}): run `python -m tracker.api.openapi > openapi.json`"
        )


def test_served_document_is_the_generated_one(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.content) == document()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/nosuch", 404),
        ("GET", "/api/v1/campaigns", 401),
        ("POST", "/api/v1/brands", 401),
        ("DELETE", "/healthz", 405),
    ],
)
def test_real_error_bodies_match_the_error_schema(client: TestClient, method: str, path: str, status: int) -> None:
    r = client.request(method, path)
    assert r.status_code == status
    _validator({"$ref": "#/components/schemas/Error"}).validate(r.json())
