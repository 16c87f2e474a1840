"""Registry routes: brands, campaigns, influencers, links, stores, fees, FX rates.

Bodies are read strictly: unknown fields, wrong JSON types (a string where an
integer belongs, a float where money belongs) and out-of-range values answer 422
naming the field; a body that is not a JSON object answers 400. Every route but
the brand routes acts inside the brand of the API key, so another brand's ids
answer exactly like ids that do not exist (404, or 422 when named in a body).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api import auth, http
from tracker.core import money
from tracker.core.errors import NotFound, Unprocessable
from tracker.registry.store import Registry, check_destination, valid_ip_or_network
from tracker.services import services

MAX_NAME = 200
MAX_LIST = 100
MAX_PAGE = 10_000
_CLICK_ID_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_COUPON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,63}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PERCENT_MAX = Decimal(100)
_VALUE_MAX = Decimal("1e13")
_LAST_INSTANT = datetime(2299, 12, 31, tzinfo=UTC)  # the end of ClickHouse's DateTime64 range


def _registry(request: Request) -> Registry:
    return services(request).registry


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, Decimal | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _invalid(message: str) -> Unprocessable:
    return Unprocessable(message, code="invalid_field")


class Body:
    """Typed access to a JSON object body; every problem names the field."""

    def __init__(self, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise _invalid(
                f"Unknown field {unknown[0]!r}; this route accepts {', '.join(allowed)}."
            )
        self.data = data

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _required(self, name: str) -> Any:
        value = self.data.get(name)
        if value is None:
            raise Unprocessable(f"Field {name!r} is required.", code="missing_field")
        return value

    def text(self, name: str, *, required: bool = False, default: str = "", max_len: int = MAX_NAME) -> str:
        value = self._required(name) if required else self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise _invalid(f"Field {name!r} must be a string, got {_kind(value)}.")
        value = value.strip()
        if required and not value:
            raise _invalid(f"Field {name!r} must not be empty.")
        if len(value) > max_len:
            raise _invalid(f"Field {name!r} is {len(value)} characters long; the limit is {max_len}.")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise _invalid(f"Field {name!r} contains control characters.")
        if not _utf8(value):
            raise _invalid(f"Field {name!r} is not valid Unicode text (it holds a lone surrogate).")
        return value

    def integer(self, name: str, *, default: int, lo: int, hi: int) -> int:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"Field {name!r} must be an integer, got {_kind(value)} ({value!r}).")
        if not lo <= value <= hi:
            raise _invalid(f"Field {name!r} must be between {lo} and {hi}, got {value}.")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise _invalid(f"Field {name!r} must be true or false, got {_kind(value)} ({value!r}).")
        return value

    def strings(self, name: str, *, max_items: int = MAX_LIST, max_len: int = 255) -> list[str]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _invalid(f"Field {name!r} must be an array of strings, got {_kind(value)}.")
        if len(value) > max_items:
            raise _invalid(f"Field {name!r} has {len(value)} items; the limit is {max_items}.")
        out: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item.strip() or len(item) > max_len:
                raise _invalid(f"Field {name!r} must hold non-empty strings, got {item!r}.")
            out.append(item.strip())
        return out

    def decimal(self, name: str, value: Any, *, max_places: int) -> Decimal:
        """A finite Decimal from a decimal string or a JSON number (never a float)."""
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise _invalid(f"Field {name!r} must be a decimal string such as \"12.5\", got {_kind(value)}.")
        try:
            number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
        except InvalidOperation:
            raise _invalid(f"Field {name!r} value {value!r} is not a decimal number.") from None
        if not number.is_finite():
            raise _invalid(f"Field {name!r} value {value!r} is not a finite number.")
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > max_places:
            raise _invalid(f"Field {name!r} value {value} has more than {max_places} decimal places.")
        if abs(number) >= _VALUE_MAX:
            raise _invalid(f"Field {name!r} value {value} is too large.")
        return number


def _currency(value: object, name: str = "currency") -> str:
    if not money.is_currency(value):
        raise Unprocessable(
            f"{name} {value!r} is not an ISO 4217 currency code (use upper case, e.g. USD, EUR, JPY).",
            code="invalid_currency",
        )
    assert isinstance(value, str)
    return value


def _domain(raw: str) -> str:
    d = raw.strip().lower().rstrip(".")
    d = d.removeprefix("*.")
    try:
        d = d.encode("idna").decode("ascii")
    except UnicodeError:
        raise _invalid(f"allowed_domains entry {raw!r} is not a domain name.") from None
    labels = d.split(".")
    if len(d) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise _invalid(f"allowed_domains entry {raw!r} is not a domain name such as shop.example.com.")
    return d


def _datetime(name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise _invalid(f"Field {name!r} must be an ISO 8601 date-time string, got {_kind(value)}.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _invalid(f"Field {name!r} value {value!r} is not an ISO 8601 date-time.") from None
    if parsed.tzinfo is None:
        raise _invalid(f"Field {name!r} value {value!r} needs a time zone, e.g. 2026-12-31T23:59:00Z.")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _invalid(f"Field {name!r} value {value!r} is out of range.") from None


def _future(name: str, value: object) -> datetime:
    when = _datetime(name, value)
    if when <= datetime.now(UTC):
        raise _invalid(f"Field {name!r} value {value!r} is in the past.")
    if when >= _LAST_INSTANT:
        raise _invalid(f"Field {name!r} value {value!r} is too far in the future (before 2299-12-31).")
    return when


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _page(request: Request) -> tuple[int, int]:
    out = []
    for name, default, hi in (("limit", 1000, MAX_PAGE), ("offset", 0, 10**9)):
        raw = request.query_params.get(name)
        if raw is None:
            out.append(default)
            continue
        if not (raw.isascii() and raw.isdigit()) or not (1 if name == "limit" else 0) <= int(raw) <= hi:
            raise _invalid(f"Query parameter {name!r} must be an integer up to {hi}, got {raw!r}.")
        out.append(int(raw))
    return out[0], out[1]


# ------------------------------------------------------------------------ brands


async def create_brand(request: Request) -> Response:
    await auth.require_admin(request)
    body = Body(await http.read_json(request), ("name", "currency"))
    name = body.text("name", required=True)
    currency = _currency(body.data.get("currency", "USD"))
    brand, api_key = await _registry(request).create_brand(name, currency)
    return http.JSONResponse({**brand, "api_key": api_key}, status_code=201)


async def list_brands(request: Request) -> Response:
    if auth.is_admin(request):
        return http.JSONResponse({"items": await _registry(request).list_brands()})
    brand = await auth.brand_of(request)
    return http.JSONResponse({"items": [brand]})


# --------------------------------------------------------------------- campaigns


async def create_campaign(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = Body(
        await http.read_json(request),
        ("name", "attribution_window_days", "commission", "click_id_param", "allowed_domains"),
    )
    name = body.text("name", required=True)
    window = body.integer("attribution_window_days", default=30, lo=1, hi=365)
    commission = body._required("commission")
    if not isinstance(commission, dict):
        raise _invalid(f"Field 'commission' must be an object {{type, value}}, got {_kind(commission)}.")
    if set(commission) - {"type", "value"}:
        raise _invalid(f"Field 'commission' accepts only type and value, got {sorted(commission)}.")
    ctype = commission.get("type")
    if ctype not in ("percent", "flat"):
        raise _invalid(f"commission.type must be \"percent\" or \"flat\", got {ctype!r}.")
    if commission.get("value") is None:
        raise Unprocessable("Field 'commission.value' is required.", code="missing_field")
    places = 4 if ctype == "percent" else min(4, money.minor_units(brand["currency"]))
    value = body.decimal("commission.value", commission["value"], max_places=places)
    if value < 0 or (ctype == "percent" and value > _PERCENT_MAX):
        bounds = "0 to 100" if ctype == "percent" else "0 or more"
        raise _invalid(f"commission.value {value} is out of range: a {ctype} commission is {bounds}.")
    param = body.text("click_id_param", default="click_id", max_len=64)
    if not _CLICK_ID_PARAM.match(param):
        raise _invalid(
            f"click_id_param {param!r} is not a safe query parameter name "
            "(letters, digits, '_', '-', '.'; starting with a letter or '_')."
        )
    domains = list(dict.fromkeys(_domain(d) for d in body.strings("allowed_domains")))
    campaign = await _registry(request).create_campaign(
        brand["id"],
        name=name,
        attribution_window_days=window,
        commission_type=ctype,
        commission_value=value,
        click_id_param=param,
        allowed_domains=domains,
    )
    return http.JSONResponse(campaign, status_code=201)


async def list_campaigns(request: Request) -> Response:
    brand = await auth.brand_of(request)
    return http.JSONResponse({"items": await _registry(request).list_campaigns(brand["id"])})


async def get_campaign(request: Request) -> Response:
    brand = await auth.brand_of(request)
    cid = request.path_params["campaign_id"]
    campaign = await _registry(request).get_campaign(brand["id"], cid)
    if campaign is None:
        raise NotFound(f"Campaign {cid!r} does not exist.")
    return http.JSONResponse(campaign)


# ------------------------------------------------------------------- influencers


async def create_influencer(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = Body(await http.read_json(request), ("name", "handle", "platform"))
    influencer = await _registry(request).create_influencer(
        brand["id"],
        name=body.text("name", required=True),
        handle=body.text("handle", max_len=100),
        platform=body.text("platform", max_len=50),
    )
    return http.JSONResponse(influencer, status_code=201)


async def list_influencers(request: Request) -> Response:
    brand = await auth.brand_of(request)
    return http.JSONResponse({"items": await _registry(request).list_influencers(brand["id"])})


async def get_influencer(request: Request) -> Response:
    brand = await auth.brand_of(request)
    iid = request.path_params["influencer_id"]
    influencer = await _registry(request).get_influencer(brand["id"], iid)
    if influencer is None:
        raise NotFound(f"Influencer {iid!r} does not exist.")
    return http.JSONResponse(influencer)


# ------------------------------------------------------------------------- links


async def create_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = Body(
        await http.read_json(request),
        ("campaign_id", "influencer_id", "destination_url", "coupon_code", "code", "expires_at"),
    )
    campaign_id = body.text("campaign_id", required=True)
    influencer_id = body.text("influencer_id", required=True)
    destination = body._required("destination_url")
    check_destination(destination)  # shape first; the campaign's domains are checked by the registry
    coupon = body.text("coupon_code", max_len=64) or None
    if coupon is not None and not _COUPON.match(coupon):
        raise _invalid(
            f"coupon_code {coupon!r} is not valid: use 2 to 64 letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    code = body.text("code", max_len=64) or None
    expires_at = _future("expires_at", body.data["expires_at"]) if body.has("expires_at") else None
    reg = _registry(request)
    row = await reg.create_link(
        brand["id"],
        campaign_id=campaign_id,
        influencer_id=influencer_id,
        destination_url=destination,
        coupon_code=coupon,
        code=code,
        expires_at=expires_at,
    )
    return http.JSONResponse(reg.link_answer(row, _base_url(request)), status_code=201)


async def list_links(request: Request) -> Response:
    brand = await auth.brand_of(request)
    limit, offset = _page(request)
    reg = _registry(request)
    rows = await reg.list_links(
        brand["id"],
        campaign_id=request.query_params.get("campaign_id"),
        influencer_id=request.query_params.get("influencer_id"),
        limit=limit,
        offset=offset,
    )
    base = _base_url(request)
    return http.JSONResponse({"items": [reg.link_answer(r, base) for r in rows]})


def _no_link(code: str) -> NotFound:
    return NotFound(f"Link {code!r} does not exist.")


async def get_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    code = request.path_params["code"]
    reg = _registry(request)
    row = await reg.get_link(brand["id"], code)
    if row is None:
        raise _no_link(code)
    return http.JSONResponse(reg.link_answer(row, _base_url(request)))


async def patch_link(request: Request) -> Response:
    brand = await auth.brand_of(request)
    code = request.path_params["code"]
    body = Body(await http.read_json(request), ("disabled", "destination_url", "expires_at"))
    if not body.data:
        raise _invalid("Send at least one of disabled, destination_url, expires_at.")
    disabled = body.boolean("disabled")
    destination = None
    if "destination_url" in body.data:
        destination = check_destination(body._required("destination_url"))
    changes: dict[str, Any] = {}
    if "expires_at" in body.data:
        raw = body.data["expires_at"]
        changes["expires_at"] = None if raw is None else _future("expires_at", raw)
    reg = _registry(request)
    row = await reg.update_link(brand["id"], code, disabled=disabled, destination_url=destination, **changes)
    if row is None:
        raise _no_link(code)
    return http.JSONResponse(reg.link_answer(row, _base_url(request)))


# ------------------------------------------------------------------------ stores


async def create_store(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = Body(await http.read_json(request), ("name", "allowed_ips"))
    name = body.text("name", required=True)
    ips: list[str] = []
    for raw in body.strings("allowed_ips", max_len=64):
        try:
            ips.append(valid_ip_or_network(raw))
        except ValueError:
            raise _invalid(f"allowed_ips entry {raw!r} is not an IP address or CIDR block.") from None
    new = await _registry(request).create_store(brand["id"], name=name, allowed_ips=list(dict.fromkeys(ips)))
    answer = {**new.store, "secret": new.secret, "postback_token": new.postback_token}
    return http.JSONResponse(answer, status_code=201)


async def list_stores(request: Request) -> Response:
    brand = await auth.brand_of(request)
    rows = await _registry(request).list_stores(brand["id"])
    return http.JSONResponse({"items": [Registry.store_answer(r) for r in rows]})


async def get_store(request: Request) -> Response:
    brand = await auth.brand_of(request)
    sid = request.path_params["store_id"]
    row = await _registry(request).store_row(brand["id"], sid)
    if row is None:
        raise NotFound(f"Store {sid!r} does not exist.")
    return http.JSONResponse(Registry.store_answer(row))


# -------------------------------------------------------------------------- fees


async def create_fee(request: Request) -> Response:
    brand = await auth.brand_of(request)
    body = Body(
        await http.read_json(request), ("campaign_id", "influencer_id", "amount", "currency", "date", "note")
    )
    campaign_id = body.text("campaign_id", required=True)
    influencer_id = body.text("influencer_id", required=True)
    currency = _currency(body.data["currency"]) if body.has("currency") else brand["currency"]
    try:
        amount = money.parse_amount(body._required("amount"), currency)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    day = datetime.now(UTC).date()
    if body.has("date"):
        raw = body.data["date"]
        if not isinstance(raw, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise _invalid(f"Field 'date' must be a YYYY-MM-DD string, got {raw!r}.")
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise _invalid(f"Field 'date' value {raw!r} is not a calendar date.") from None
        if not date(1970, 1, 1) <= day <= date(2149, 6, 6):  # the range of ClickHouse's Date
            raise _invalid(f"Field 'date' value {raw!r} is out of range.")
    fee = await _registry(request).create_fee(
        brand,
        campaign_id=campaign_id,
        influencer_id=influencer_id,
        amount=amount,
        currency=currency,
        day=day,
        note=body.text("note", max_len=500),
    )
    return http.JSONResponse(fee, status_code=201)


async def list_fees(request: Request) -> Response:
    brand = await auth.brand_of(request)
    items = await _registry(request).list_fees(
        brand["id"],
        campaign_id=request.query_params.get("campaign_id"),
        influencer_id=request.query_params.get("influencer_id"),
    )
    return http.JSONResponse({"items": items})


# ---------------------------------------------------------------------- FX rates


async def put_fx_rate(request: Request) -> Response:
    brand = await auth.brand_of(request)
    currency = _currency(request.path_params["currency"])
    body = Body(await http.read_json(request), ("rate",))
    rate = body.decimal("rate", body._required("rate"), max_places=8)
    if rate <= 0 or rate >= Decimal("1e10"):
        raise _invalid(f"Field 'rate' must be greater than 0 and below 10000000000, got {rate}.")
    answer = await _registry(request).set_fx_rate(brand, currency, rate)
    return http.JSONResponse(answer)


async def list_fx_rates(request: Request) -> Response:
    brand = await auth.brand_of(request)
    return http.JSONResponse({"items": await _registry(request).list_fx_rates(brand)})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/brands", create_brand, methods=["POST"]),
        Route("/api/v1/brands", list_brands, methods=["GET"]),
        Route("/api/v1/campaigns", create_campaign, methods=["POST"]),
        Route("/api/v1/campaigns", list_campaigns, methods=["GET"]),
        Route("/api/v1/campaigns/{campaign_id}", get_campaign, methods=["GET"]),
        Route("/api/v1/influencers", create_influencer, methods=["POST"]),
        Route("/api/v1/influencers", list_influencers, methods=["GET"]),
        Route("/api/v1/influencers/{influencer_id}", get_influencer, methods=["GET"]),
        Route("/api/v1/links", create_link, methods=["POST"]),
        Route("/api/v1/links", list_links, methods=["GET"]),
        Route("/api/v1/links/{code}", get_link, methods=["GET"]),
        Route("/api/v1/links/{code}", patch_link, methods=["PATCH"]),
        Route("/api/v1/stores", create_store, methods=["POST"]),
        Route("/api/v1/stores", list_stores, methods=["GET"]),
        Route("/api/v1/stores/{store_id}", get_store, methods=["GET"]),
        Route("/api/v1/fees", create_fee, methods=["POST"]),
        Route("/api/v1/fees", list_fees, methods=["GET"]),
        Route("/api/v1/fx-rates/{currency}", put_fx_rate, methods=["PUT"]),
        Route("/api/v1/fx-rates", list_fx_rates, methods=["GET"]),
    ]
