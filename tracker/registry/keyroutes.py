"""``/api/v1/keys``: a brand's scoped API keys, made, listed, rotated and revoked.

A new key (and a rotated one) is shown once; the list shows no secret, only the first
8 characters as ``prefix`` so people can tell keys apart, and when each was last used
(to the minute). Every change is in the audit log (``key.create``, ``key.revoke``,
``key.rotate``) with the key's id, never its secret. A revoked key stops working on
every worker within a few seconds (``tracker.registry.apikeys``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, Timestamp, invalid, parse_body
from tracker.core.errors import NotFound, Unprocessable
from tracker.registry.fields import Name
from tracker.registry.models import Body
from tracker.services import services

TAG = "keys"
_AUTHED = (401, 403, 503)
_KEY_ID = {"key_id": {"type": "string", "pattern": "^key_[0-9a-f]{16}$", "description": "The key's public id."}}


class KeyIn(Body):
    """`read`: every GET of the brand; `write`: everything; `influencer`: only /api/v1/me/* for one influencer."""

    name: Name
    scope: Literal["read", "write", "influencer"]
    influencer_id: Name | None = None

    @model_validator(mode="after")
    def _influencer_matches_scope(self) -> KeyIn:
        if self.scope == "influencer" and self.influencer_id is None:
            raise invalid("missing_field", "Field 'influencer_id' is required for an influencer key")
        if self.scope != "influencer" and self.influencer_id is not None:
            raise invalid("invalid_field", f"Field 'influencer_id' only goes with scope influencer, not {self.scope}")
        return self


class ApiKey(Answer):
    id: str = Field(description='"key_" + the first 16 hex digits of the sha256 of the key.')
    name: str
    scope: Literal["read", "write", "influencer"]
    influencer_id: str | None
    prefix: str = Field(description="The key's first 8 characters, to tell keys apart.")
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(description="Last use, to the minute; null if never used.")


class NewApiKey(ApiKey):
    key: str = Field(description="The key itself: shown this once, stored hashed.")


class ApiKeyList(Answer):
    items: list[ApiKey]


def _audit_view(record: dict[str, Any]) -> dict[str, Any]:
    return ApiKey.model_validate(record).dump()


async def _audit(request: Request, brand_id: str, action: str, object_id: str,
                 before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    await services(request).registry.audit.record(
        brand_id, auth.actor(request), action, object_id,
        _audit_view(before) if before else None, _audit_view(after) if after else None,
    )


@api("POST", "/api/v1/keys", Operation(
    "Create a scoped API key (shown once).", TAG, ("brand",), body=KeyIn, answers={201: NewApiKey},
    errors=(*_AUTHED, 400, 413, 422),
))
async def create_key(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = parse_body(KeyIn, await http.read_body(request))
    registry = services(request).registry
    if body.influencer_id is not None and await registry.get_influencer(brand["id"], body.influencer_id) is None:
        raise Unprocessable(f"Influencer {body.influencer_id!r} does not exist.", code="unknown_influencer")
    new = await registry.apikeys.create(
        brand["id"], name=body.name, scope=body.scope, influencer_id=body.influencer_id or ""
    )
    await _audit(request, brand["id"], "key.create", new.record["id"], None, new.record)
    return http.JSONResponse(NewApiKey.model_validate({**new.record, "key": new.key}).dump(), status_code=201)


@api("GET", "/api/v1/keys", Operation(
    "The brand's working API keys (no secrets), with when each was last used.", TAG, ("brand",),
    answers={200: ApiKeyList}, errors=_AUTHED,
))
async def list_keys(request: Request) -> Response:
    brand = await auth.brand_of(request)
    rows = await services(request).registry.apikeys.all(brand["id"])
    return http.JSONResponse(ApiKeyList(items=[ApiKey.model_validate(r) for r in rows]).dump())


def _key_id(request: Request) -> str:
    key_id: str = request.path_params["key_id"]
    if not (key_id.startswith("key_") and len(key_id) == 20):
        raise NotFound(f"API key {key_id[:40]!r} does not exist or is already revoked.")
    return key_id


@api("DELETE", "/api/v1/keys/{key_id}", Operation(
    "Revoke an API key: it stops working on every worker within 5 s.", TAG, ("brand",),
    answers={204: None}, errors=(*_AUTHED, 404, 409), path_params=_KEY_ID,
    description="409 when it is the brand's last write key (create another first).",
))
async def revoke_key(request: Request) -> Response:
    brand = await auth.brand_of(request)
    key_id = _key_id(request)
    old = await services(request).registry.apikeys.revoke(brand["id"], key_id)
    await _audit(request, brand["id"], "key.revoke", key_id, old, None)
    return Response(status_code=204)


@api("POST", "/api/v1/keys/{key_id}/rotate", Operation(
    "Rotate an API key: a new secret with the same name and scope; the old one is revoked.", TAG, ("brand",),
    answers={201: NewApiKey}, errors=(*_AUTHED, 404, 409), path_params=_KEY_ID,
))
async def rotate_key(request: Request) -> Response:
    brand = await auth.brand_of(request)
    key_id = _key_id(request)
    old, new = await services(request).registry.apikeys.rotate(brand["id"], key_id)
    await _audit(request, brand["id"], "key.rotate", key_id, old, new.record)
    return http.JSONResponse(NewApiKey.model_validate({**new.record, "key": new.key}).dump(), status_code=201)


def routes() -> list[BaseRoute]:
    return [create_key, list_keys, revoke_key, rotate_key]
