"""Routes that describe themselves: what they accept, answer and refuse.

Every API route is an ``ApiRoute`` carrying an ``Operation``: its request
models (body, query), answer models per status, security and error statuses.
The handler validates with the same models (``tracker.api.schema``), so the
OpenAPI document generated from the operations (``tracker.api.openapi``) says
what the code really accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount, Route

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


class ApiRoute(Route):
    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str, operation: Operation) -> None:
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
