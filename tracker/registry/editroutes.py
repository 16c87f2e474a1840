"""Registry edit routes of the brand app: PATCH influencers, PATCH and DELETE fees, a link by its
numeric id (campaigns: ``tracker.registry.campaignroutes``, which takes fallback_url and archived too).

Every change is audited (``{at, key_id, action, object_id, before, after}``). Archiving keeps
everything (links keep redirecting, reports keep counting): it only takes the item out of the
app's lists. A deleted fee stops counting in reports at once and stays in the audit log.

Links are addressed by code (``/api/v1/links/{code}``: codes are case-sensitive, ``aB3`` and
``ab3`` are two links) or by id (``/api/v1/links/by-id/{id}``: the integer ``id`` of the link
answer). A separate path, not a guess from the shape: a vanity code may be all digits.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import parse_body
from tracker.core.errors import NotFound
from tracker.registry.models import Fee, Influencer, Link
from tracker.registry.patches import FeePatch, InfluencerPatch
from tracker.registry.routes import AUTHED, TAG, WITH_BODY, _answer, _audit, _body, _registry, _short_url_base

_ID = {"type": "string"}


def _patch(summary: str, body: type[Any], answer: type[Any], name: str) -> Operation:
    return Operation(summary, TAG, ("brand",), body=body, answers={200: answer}, errors=(*WITH_BODY, 404, 409),
                     path_params={name: _ID})


@api("PATCH", "/api/v1/influencers/{influencer_id}", _patch(
    "Edit an influencer: name, handle, platform, archived.", InfluencerPatch, Influencer, "influencer_id",
))
async def update_influencer(request: Request) -> Response:
    brand = await auth.brand_of(request)
    iid = request.path_params["influencer_id"]
    body = await _body(request, InfluencerPatch)
    registry = _registry(request)
    old = await registry.get_influencer(brand["id"], iid)
    changes = {k: v for k, v in body.model_dump(exclude_none=True).items()}
    if "archived" in changes:
        changes["archived"] = int(changes["archived"])
    row = await registry.influencers.update(brand["id"], iid, changes) if old is not None else None
    if old is None or row is None:
        raise NotFound(f"Influencer {iid!r} does not exist.")
    answer = Influencer.from_row(row)
    await _audit(request, brand["id"], "influencer.update", iid, Influencer.from_row(old), answer)
    return _answer(answer)


@api("PATCH", "/api/v1/fees/{fee_id}", _patch(
    "Correct a fee: amount (and currency), date, note.", FeePatch, Fee, "fee_id",
))
async def update_fee(request: Request) -> Response:
    brand = await auth.brand_of(request)
    fid = request.path_params["fee_id"]
    raw = await http.read_body(request)
    fees = _registry(request).fees
    old = await fees.row(brand["id"], fid)
    # A new amount without a currency is in the fee's own currency: its decimals.
    body = parse_body(FeePatch, raw, {"currency": old["original_currency"] if old else brand["currency"]})
    row = await fees.update(brand, fid, amount=body.amount, currency=body.currency, day=body.date, note=body.note)
    if old is None or row is None:
        raise NotFound(f"Fee {fid!r} does not exist.")
    answer = Fee.from_row(row)
    await _audit(request, brand["id"], "fee.update", fid, Fee.from_row(old), answer)
    return _answer(answer)


@api("DELETE", "/api/v1/fees/{fee_id}", Operation(
    "Delete a fee (reports stop counting it; the audit log keeps it).", TAG, ("brand",), answers={204: None},
    errors=(*AUTHED, 404, 409), path_params={"fee_id": _ID},
))
async def delete_fee(request: Request) -> Response:
    brand = await auth.brand_of(request)
    fid = request.path_params["fee_id"]
    row = await _registry(request).fees.delete(brand["id"], fid)
    if row is None:
        raise NotFound(f"Fee {fid!r} does not exist.")
    await _audit(request, brand["id"], "fee.delete", fid, Fee.from_row(row), None)
    return Response(status_code=204)


@api("GET", "/api/v1/links/by-id/{link_id}", Operation(
    "One link by its numeric id (the `id` of a link answer).", TAG, ("brand",), answers={200: Link},
    errors=(*AUTHED, 404), path_params={"link_id": {"type": "integer", "minimum": 1}},
))
async def get_link_by_id(request: Request) -> Response:
    brand = await auth.brand_of(request)
    raw = request.path_params["link_id"]
    row = None
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) > 0:
        row = await _registry(request).links.get_by_id(brand["id"], int(raw))
    if row is None:
        raise NotFound(f"No link has the id {raw[:40]!r}.")
    return _answer(Link.from_row(row, _short_url_base(request)))


def routes() -> list[BaseRoute]:
    # by-id before /api/v1/links/{code}/qr would not matter (two segments each, different second), but
    # it must come before nothing that takes "by-id" as a code: /api/v1/links/{code} is one segment.
    return [update_influencer, update_fee, delete_fee, get_link_by_id]
