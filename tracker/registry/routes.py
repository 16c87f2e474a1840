"""Registry routes: brands, campaigns, influencers, links, stores, fees, FX rates.

Each route is an ``ApiRoute`` whose ``Operation`` names the models it validates
with and answers from (``tracker.registry.models``). A body that is not a JSON
object answers 400, a bad field 422 naming it. Every route but the brand routes
acts inside the brand of the API key, so another brand's ids answer exactly like
ids that do not exist (404, or 422 when named in a body).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, parse_body, parse_query, validate
from tracker.core.errors import NotFound, Unprocessable
from tracker.registry import Registry
from tracker.registry.fields import CURRENCY_SCHEMA
from tracker.registry.links import UNSET
from tracker.registry.models import (
    AuditEntry,
    AuditPage,
    AuditQuery,
    Brand,
    BrandIn,
    BrandList,
    Campaign,
    CampaignIn,
    CampaignList,
    Fee,
    FeeIn,
    FeeList,
    FeeQuery,
    FxRate,
    FxRateIn,
    FxRateList,
    FxRatePath,
    Influencer,
    InfluencerIn,
    InfluencerList,
    Link,
    LinkIn,
    LinkList,
    LinkPatch,
    LinkQuery,
    NewBrand,
)
from tracker.registry.storemodels import NewStore, Store, StoreIn, StoreList, StorePatch
from tracker.services import services

M = TypeVar("M", bound=BaseModel)
TAG = "registry"
# What every brand route may answer: no or an unknown key (401), the admin token (403), storage down (503).
AUTHED = (401, 403, 503)
# ... and every route that reads a body: not a JSON object (400), too large (413), a bad field (422).
WITH_BODY = (*AUTHED, 400, 413, 422)
_CODE = {"code": {"type": "string", "description": "The link's short code."}}


def _created(summary: str, body: type[BaseModel], answer: type[BaseModel], *errors: int) -> Operation:
    return Operation(summary, TAG, ("brand",), body=body, answers={201: answer}, errors=(*WITH_BODY, *errors))


def _listed(summary: str, answer: type[BaseModel], query: type[BaseModel] | None = None) -> Operation:
    errors = (*AUTHED, 422) if query else AUTHED
    return Operation(summary, TAG, ("brand",), query=query, answers={200: answer}, errors=errors)


def _one(summary: str, answer: type[BaseModel], path_params: Mapping[str, Mapping[str, Any]] | None = None
         ) -> Operation:
    return Operation(
        summary, TAG, ("brand",), answers={200: answer}, errors=(*AUTHED, 404), path_params=path_params or {}
    )


def _registry(request: Request) -> Registry:
    return services(request).registry


async def _body(request: Request, model: type[M], context: Mapping[str, Any] | None = None) -> M:
    return parse_body(model, await http.read_body(request), context)


def _short_url_base(request: Request) -> str:
    return services(request).settings.public_url or str(request.base_url)


def _answer(model: Answer, status: int = 200) -> Response:
    return http.JSONResponse(model.dump(), status_code=status)


async def _audit(
    request: Request, brand_id: str, action: str, object_id: str, before: Answer | None, after: Answer | None
) -> None:
    """Record a change as the brand sees it (answers carry no secrets)."""
    await _registry(request).audit.record(
        brand_id, auth.actor(request), action, object_id,
        before.dump() if before is not None else None, after.dump() if after is not None else None,
    )


# ------------------------------------------------------------------------ brands


@api("POST", "/api/v1/brands", Operation(
    "Create a brand and its API key (admin only).", TAG, ("admin",), body=BrandIn, answers={201: NewBrand},
    errors=WITH_BODY,
))
async def create_brand(request: Request) -> Response:
    await auth.require_admin(request)
    body = await _body(request, BrandIn)
    brand, api_key = await _registry(request).create_brand(body.name, body.currency)
    await _audit(request, brand["id"], "brand.create", brand["id"], None, Brand.model_validate(brand))
    return _answer(NewBrand.model_validate({**brand, "api_key": api_key}), 201)


@api("GET", "/api/v1/brands", Operation(
    "All brands (admin token), or the key's own brand.", TAG, ("admin", "brand"), answers={200: BrandList},
    errors=(401, 503),
))
async def list_brands(request: Request) -> Response:
    if auth.is_admin(request):
        brands = await _registry(request).list_brands()
    else:
        brands = [await auth.brand_of(request)]
    return _answer(BrandList(items=[Brand.model_validate(b) for b in brands]))


# --------------------------------------------------------------------- campaigns


@api("POST", "/api/v1/campaigns", _created("Create a campaign.", CampaignIn, Campaign))
async def create_campaign(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = await _body(request, CampaignIn, {"currency": brand["currency"]})
    campaign = await _registry(request).create_campaign(
        brand["id"],
        name=body.name,
        attribution_window_days=body.attribution_window_days,
        commission_type=body.commission.type,
        commission_value=body.commission.value,
        click_id_param=body.click_id_param,
        allowed_domains=body.allowed_domains,
        recurring_months=body.recurring_months,
        hold_days=body.hold_days,
        fallback_url=body.fallback_url,
    )
    answer = Campaign.model_validate(campaign)
    await _audit(request, brand["id"], "campaign.create", answer.id, None, answer)
    return _answer(answer, 201)


@api("GET", "/api/v1/campaigns", _listed("The brand's campaigns.", CampaignList))
async def list_campaigns(request: Request) -> Response:
    brand = await auth.brand_of(request)
    campaigns = await _registry(request).list_campaigns(brand["id"])
    return _answer(CampaignList(items=[Campaign.model_validate(c) for c in campaigns]))


@api("GET", "/api/v1/campaigns/{campaign_id}", _one("One campaign.", Campaign))
async def get_campaign(request: Request) -> Response:
    brand = await auth.brand_of(request)
    cid = request.path_params["campaign_id"]
    campaign = await _registry(request).get_campaign(brand["id"], cid)
    if campaign is None:
        raise NotFound(f"Campaign {cid!r} does not exist.")
    return _answer(Campaign.model_validate(campaign))


# ------------------------------------------------------------------- influencers


@api("POST", "/api/v1/influencers", _created("Create an influencer.", InfluencerIn, Influencer))
async def create_influencer(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = await _body(request, InfluencerIn)
    row = await _registry(request).create_influencer(
        brand["id"], name=body.name, handle=body.handle, platform=body.platform
    )
    answer = Influencer.from_row(row)
    await _audit(request, brand["id"], "influencer.create", answer.id, None, answer)
    return _answer(answer, 201)


@api("GET", "/api/v1/influencers", _listed("The brand's influencers.", InfluencerList))
async def list_influencers(request: Request) -> Response:
    brand = await auth.brand_of(request)
    rows = await _registry(request).list_influencers(brand["id"])
    return _answer(InfluencerList(items=[Influencer.from_row(r) for r in rows]))


@api("GET", "/api/v1/influencers/{influencer_id}", _one("One influencer.", Influencer))
async def get_influencer(request: Request) -> Response:
    brand = await auth.brand_of(request)
    iid = request.path_params["influencer_id"]
    row = await _registry(request).get_influencer(brand["id"], iid)
    if row is None:
        raise NotFound(f"Influencer {iid!r} does not exist.")
    return _answer(Influencer.from_row(row))


# ------------------------------------------------------------------------- links


@api("POST", "/api/v1/links", _created(
    "Mint a tracked short link for an influencer in a campaign.", LinkIn, Link, 404, 409,
))
async def create_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = await _body(request, LinkIn)
    row = await _registry(request).create_link(
        brand["id"],
        campaign_id=body.campaign_id,
        influencer_id=body.influencer_id,
        destination_url=body.destination_url,
        coupon_code=body.coupon_code,
        code=body.code,
        expires_at=body.expires_at,
    )
    answer = Link.from_row(row, _short_url_base(request))
    await _audit(request, brand["id"], "link.create", answer.code, None, answer)
    return _answer(answer, 201)


@api("GET", "/api/v1/links", _listed("The brand's links, optionally filtered.", LinkList, LinkQuery))
async def list_links(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(LinkQuery, request.query_params)
    rows = await _registry(request).list_links(
        brand["id"], campaign_id=q.campaign_id, influencer_id=q.influencer_id, limit=q.limit, offset=q.offset
    )
    base = _short_url_base(request)
    return _answer(LinkList(items=[Link.from_row(r, base) for r in rows]))


def _no_link(code: str) -> NotFound:
    return NotFound(f"Link {code!r} does not exist.")


@api("GET", "/api/v1/links/{code}", _one("One link.", Link, _CODE))
async def get_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    code = request.path_params["code"]
    row = await _registry(request).get_link(brand["id"], code)
    if row is None:
        raise _no_link(code)
    return _answer(Link.from_row(row, _short_url_base(request)))


@api("PATCH", "/api/v1/links/{code}", Operation(
    "Disable a link, change its destination or expiry (redirects see it within 5 s).", TAG, ("brand",),
    body=LinkPatch, answers={200: Link}, errors=(*WITH_BODY, 404, 409), path_params=_CODE,
))
async def update_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    code = request.path_params["code"]
    body = await _body(request, LinkPatch)
    old = await _registry(request).get_link(brand["id"], code)
    row = await _registry(request).update_link(
        brand["id"],
        code,
        disabled=body.disabled,
        destination_url=body.destination_url,
        expires_at=body.expires_at if "expires_at" in body.model_fields_set else UNSET,
    )
    if row is None:
        raise _no_link(code)
    base = _short_url_base(request)
    answer = Link.from_row(row, base)
    await _audit(request, brand["id"], "link.update", code, Link.from_row(old, base) if old else None, answer)
    return _answer(answer)


# ------------------------------------------------------------------------ stores


@api("POST", "/api/v1/stores", _created(
    "Register a store; its secret and postback token are shown only here.", StoreIn, NewStore,
))
async def create_store(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = await _body(request, StoreIn)
    new = await _registry(request).create_store(
        brand["id"], name=body.name, allowed_ips=body.allowed_ips, platform=body.platform,
        webhook_secret=body.webhook_secret,
    )
    base = _short_url_base(request)
    await _audit(request, brand["id"], "store.create", new.store["id"], None, Store.from_row(new.store, base))
    return _answer(
        NewStore.from_created(new.store, base, secret=new.secret, postback_token=new.postback_token), 201
    )


@api("GET", "/api/v1/stores", _listed("The brand's stores (without secrets).", StoreList))
async def list_stores(request: Request) -> Response:
    brand = await auth.brand_of(request)
    rows = await _registry(request).list_stores(brand["id"])
    base = _short_url_base(request)
    return _answer(StoreList(items=[Store.from_row(r, base) for r in rows]))


@api("GET", "/api/v1/stores/{store_id}", _one("One store (without secrets).", Store))
async def get_store(request: Request) -> Response:
    brand = await auth.brand_of(request)
    sid = request.path_params["store_id"]
    row = await _registry(request).store_row(brand["id"], sid)
    if row is None:
        raise NotFound(f"Store {sid!r} does not exist.")
    return _answer(Store.from_row(row, _short_url_base(request)))


@api("PATCH", "/api/v1/stores/{store_id}", Operation(
    "Rename a store, change its allowed IPs or rotate its webhook secret (the old one verifies for 24 h more).",
    TAG, ("brand",), body=StorePatch, answers={200: Store}, errors=(*WITH_BODY, 404, 409),
))
async def update_store(request: Request) -> Response:
    brand = await auth.brand_of(request)
    sid = request.path_params["store_id"]
    body = await _body(request, StorePatch)
    registry = _registry(request)
    old = await registry.store_row(brand["id"], sid)
    if old is None:
        raise NotFound(f"Store {sid!r} does not exist.")
    if body.webhook_secret is not None and (old.get("platform") or "custom") == "custom":
        raise Unprocessable(
            f"Store {sid!r} is a custom store (postbacks); only shopify, woocommerce and stripe stores have a "
            "webhook secret.", code="invalid_field",
        )
    row = await registry.stores.update(
        brand["id"], sid, name=body.name, allowed_ips=body.allowed_ips, webhook_secret=body.webhook_secret
    )
    if row is None:
        raise NotFound(f"Store {sid!r} does not exist.")
    base = _short_url_base(request)
    answer = Store.from_row(row, base)
    action = "store.rotate_webhook_secret" if body.webhook_secret is not None else "store.update"
    await _audit(request, brand["id"], action, sid, Store.from_row(old, base), answer)
    return _answer(answer)


# -------------------------------------------------------------------------- fees


@api("POST", "/api/v1/fees", _created("Record a flat fee paid to an influencer.", FeeIn, Fee, 404))
async def create_fee(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = await _body(request, FeeIn, {"currency": brand["currency"]})
    row = await _registry(request).create_fee(
        brand,
        campaign_id=body.campaign_id,
        influencer_id=body.influencer_id,
        amount=body.amount,
        currency=body.currency or brand["currency"],
        day=body.date,
        note=body.note,
    )
    answer = Fee.from_row(row)
    await _audit(request, brand["id"], "fee.create", answer.id, None, answer)
    return _answer(answer, 201)


@api("GET", "/api/v1/fees", _listed("The brand's fees, optionally filtered.", FeeList, FeeQuery))
async def list_fees(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(FeeQuery, request.query_params)
    rows = await _registry(request).list_fees(brand["id"], campaign_id=q.campaign_id, influencer_id=q.influencer_id)
    return _answer(FeeList(items=[Fee.from_row(r) for r in rows]))


# ---------------------------------------------------------------------- FX rates


@api("PUT", "/api/v1/fx-rates/{currency}", Operation(
    "Set the rate used to convert this currency into the brand currency.", TAG, ("brand",),
    body=FxRateIn, answers={200: FxRate}, errors=(*WITH_BODY, 409), path_params={"currency": CURRENCY_SCHEMA},
))
async def put_fx_rate(request: Request) -> Response:
    brand = await auth.brand_of(request)
    currency = validate(FxRatePath, request.path_params).currency
    body = await _body(request, FxRateIn)
    row = await _registry(request).set_fx_rate(brand, currency, body.rate)
    answer = FxRate.from_row(row, brand["currency"])
    await _audit(request, brand["id"], "fx_rate.set", currency, None, answer)
    return _answer(answer)


@api("GET", "/api/v1/fx-rates", _listed("The brand's exchange rates.", FxRateList))
async def list_fx_rates(request: Request) -> Response:
    brand = await auth.brand_of(request)
    rows = await _registry(request).list_fx_rates(brand["id"])
    return _answer(FxRateList(items=[FxRate.from_row(r, brand["currency"]) for r in rows]))


# ------------------------------------------------------------------------- audit


@api("GET", "/api/v1/audit", _listed(
    "The brand's audit log, newest first: every change, who made it, before and after.", AuditPage, AuditQuery,
))
async def list_audit(request: Request) -> Response:
    brand = await auth.brand_of(request)
    q = parse_query(AuditQuery, request.query_params)
    items, cursor = await _registry(request).audit.page(brand["id"], q.limit, q.cursor)
    return _answer(AuditPage(items=[AuditEntry.model_validate(i) for i in items], next_cursor=cursor))


def routes() -> list[BaseRoute]:
    return [
        create_brand, list_brands,
        create_campaign, list_campaigns, get_campaign,
        create_influencer, list_influencers, get_influencer,
        create_link, list_links, get_link, update_link,
        create_store, list_stores, get_store, update_store,
        create_fee, list_fees,
        put_fx_rate, list_fx_rates,
        list_audit,
    ]
