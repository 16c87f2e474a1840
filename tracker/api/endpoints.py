"""Routes that describe themselves: what they accept, answer and refuse.

Every API route is an ``ApiRoute`` carrying an ``Operation``: its request
models (body, query), answer models per status, security and error statuses.
The handler validates with the same models (``tracker.api.schema``), so the
OpenAPI document generated from the operations (``tracker.api.openapi``) says
what the code really accepts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route

from tracker.core.errors import UnsupportedMediaType

Security = Literal["admin", "brand", "store_signature", "store_token", "influencer", "session", "app_session"]


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    # Who may call it (None: anyone). Several entries mean any one of them.
    security: tuple[Security, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # status -> answer model; None for an answer without a JSON body (302, 204, text/csv...).
    answers: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    # Other media types an answer may take (e.g. {200: "text/csv"} for format=csv).
    also: Mapping[int, str] = field(default_factory=dict)
    errors: Sequence[int] = ()
    description: str | None = None
    # Path parameter -> JSON schema of its value (default: an opaque id string).
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # status -> response header -> JSON schema of its value (e.g. {302: {"Location": {...}}}).
    headers: Mapping[int, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    # The OpenAPI operationId; an ApiRoute fills it from its handler's name (create_brand -> createBrand).
    operation_id: str | None = None


@dataclass(frozen=True)
class Unrouted:
    """An operation the app answers before its router (the redirect), described like a route."""

    path: str
    method: str
    operation: Operation


def _camel(name: str) -> str:
    head, *rest = name.strip("_").split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def is_json(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type (RFC 6839), any case, any parameters."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return (length is not None and length.strip() not in ("", "0")) or "transfer-encoding" in request.headers


def json_only(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` answering 415 to a body not declared as JSON (a route whose body model is JSON).

    A missing body is left to the route (its model names what is missing).
    """

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Any:
        content_type = request.headers.get("content-type")
        if _has_body(request) and not is_json(content_type):
            given = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
            raise UnsupportedMediaType(f"This route takes a JSON body sent as application/json, not {given}.")
        return await endpoint(request)

    return checked


class ApiRoute(Route):
    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str, operation: Operation) -> None:
        if operation.body is not None and method in ("POST", "PUT", "PATCH"):
            endpoint = json_only(endpoint)
            if 415 not in operation.errors:
                operation = replace(operation, errors=(*operation.errors, 415))
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        if operation.operation_id is None:
            operation = replace(operation, operation_id=_camel(getattr(endpoint, "__name__", self.name)))
        self.operation = operation


def api(method: str, path: str, operation: Operation) -> Callable[[Callable[..., Any]], ApiRoute]:
    """Declare a handler as an API route: ``ROUTE = api("GET", "/x", Operation(...))(handler)``."""

    def wrap(endpoint: Callable[..., Any]) -> ApiRoute:
        return ApiRoute(path, endpoint, method=method, operation=operation)

    return wrap


def operations(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, str, Operation]]:
    """(path, method, operation) of every described route, mounts included."""
    for route in routes:
        if isinstance(route, ApiRoute):
            yield route.path, route.method, route.operation
        elif isinstance(route, Mount):
            for path, method, op in operations(route.routes):
                yield route.path + path, method, op
