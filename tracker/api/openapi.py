"""The OpenAPI 3.1 document of every route, maintained by hand next to the code.

Written as a Python dict from small helpers rather than generated from the
handlers: the contract in DESIGN.md is fixed, and a reviewer should see a change
to it as a diff here. ``tests/test_openapi.py`` checks that every route of the app
is documented and every documented path is routed; schemathesis
(``loadtests/schemathesis_run.sh``) checks the running server against it.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker import __version__

Schema = dict[str, Any]

ERROR_STATUSES: dict[int, str] = {
    400: "The request is malformed (bad JSON, bad parameter); the message names the value.",
    401: "Missing or wrong credentials.",
    403: "The credentials may not do this (e.g. a brand key on an admin route, an IP not allowed).",
    404: "Not found, or owned by another brand.",
    405: "Method not allowed on this path.",
    409: "Conflicts with the current state (e.g. a status move that is not allowed).",
    410: "The link is disabled.",
    413: "The request body is too large.",
    415: "The body is not JSON.",
    422: "Well-formed but not acceptable (e.g. a currency without an exchange rate).",
    429: "Rate limited (e.g. too many unknown short codes from one address); retry after Retry-After.",
    503: "A backend is unavailable; retry after the Retry-After header.",
}


# --- schema helpers -----------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def string(description: str | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "string", **kw}
    if description:
        s["description"] = description
    return s


def integer(description: str | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "integer", **kw}
    if description:
        s["description"] = description
    return s


def boolean(description: str | None = None) -> Schema:
    s: Schema = {"type": "boolean"}
    if description:
        s["description"] = description
    return s


def array(items: Schema, **kw: Any) -> Schema:
    return {"type": "array", "items": items, **kw}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **kw: Any) -> Schema:
    s: Schema = {"type": "object", "properties": properties, **kw}
    if required:
        s["required"] = list(required)
    return s


MONEY = string('A decimal amount as a string, e.g. "49.90".', pattern=r"^-?[0-9]+(\.[0-9]+)?$")
MONEY_IN = string(
    'A decimal amount as a string, e.g. "49.90" (numbers are refused: floats are inexact).',
    pattern=r"^[0-9]{1,9}(\.[0-9]{1,2})?$",
)
DECIMAL = string("A decimal number as a string.")
CURRENCY = string("ISO 4217 code.", pattern="^[A-Z]{3}$")
# Inputs take any ISO 4217 code; the common ones are listed so generated requests use real codes.
CURRENCY_IN = string(
    "ISO 4217 code.", enum=["USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "SEK", "BRL", "INR", "KWD"]
)
ID = string("Opaque identifier.", minLength=1, maxLength=64)
RATIO = nullable({"anyOf": [{"type": "number"}, DECIMAL]})
DATE = string("A calendar date, YYYY-MM-DD.", format="date")
TIMESTAMP = string("An ISO 8601 timestamp with a time zone.", format="date-time")
STATUS = string(enum=["pending", "approved", "rejected", "refunded"])
NAME_IN = string(minLength=1, maxLength=200, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")
COUPON = string(pattern="^[A-Za-z0-9][A-Za-z0-9_-]{1,63}$")


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def ok(status: int, description: str, schema: Schema) -> dict[str, Any]:
    return {str(status): {"description": description, "content": json_content(schema)}}


def errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": ERROR_STATUSES[s], "content": json_content(ref("Error"))} for s in sorted(statuses)}


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        p["description"] = description
    return p


def path_param(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def operation(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    security: list[dict[str, list[str]]] | None = None,
    request_body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    op["security"] = security if security is not None else []
    if request_body is not None:
        op["requestBody"] = request_body
    if parameters:
        op["parameters"] = parameters
    return op


ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
BRAND: list[dict[str, list[str]]] = [{"brandKey": []}]
STORE: list[dict[str, list[str]]] = [{"storeId": [], "storeSignature": []}]
# What every authenticated route can answer besides its own outcomes.
AUTHED = (401, 429, 503)
# ... and every route that reads a JSON body.
WITH_BODY = (*AUTHED, 400, 413, 415, 422)


def create(op_id: str, summary: str, schema_in: str, schema_out: str, *extra: int) -> dict[str, Any]:
    return operation(
        op_id,
        summary,
        "registry",
        {**ok(201, "Created.", ref(schema_out)), **errors(*WITH_BODY, *extra)},
        security=BRAND,
        request_body=body(ref(schema_in)),
    )


def list_of(op_id: str, summary: str, schema: str, parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    statuses = (*AUTHED, 422) if parameters else AUTHED
    return operation(
        op_id,
        summary,
        "registry",
        {**ok(200, "The brand's items.", obj({"items": array(ref(schema))}, ("items",))), **errors(*statuses)},
        security=BRAND,
        parameters=parameters,
    )


def get_one(op_id: str, summary: str, schema: str, param: str) -> dict[str, Any]:
    return operation(
        op_id,
        summary,
        "registry",
        {**ok(200, "Found.", ref(schema)), **errors(*AUTHED, 404)},
        security=BRAND,
        parameters=[path_param(param, string(minLength=1, maxLength=64))],
    )


# --- component schemas -------------------------------------------------------------------------


def _inputs() -> dict[str, Schema]:
    closed: dict[str, Any] = {"additionalProperties": False}
    return {
        "BrandIn": obj({"name": NAME_IN, "currency": CURRENCY_IN}, ("name",), **closed),
        "CommissionIn": obj(
            {"type": string(enum=["percent", "flat"]), "value": string(pattern=r"^[0-9]{1,6}(\.[0-9]{1,2})?$")},
            ("type", "value"),
            **closed,
        ),
        "CampaignIn": obj(
            {
                "name": NAME_IN,
                "attribution_window_days": integer(minimum=1, maximum=365),
                "commission": ref("CommissionIn"),
                "click_id_param": string(pattern="^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"),
                "allowed_domains": array(
                    string(pattern=r"^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\.(com|org|net)$"), maxItems=10
                ),
            },
            ("name", "commission"),
            **closed,
        ),
        "InfluencerIn": obj(
            {
                "name": NAME_IN,
                "handle": string(maxLength=100, pattern=r"^[^\x00-\x1f\x7f]*$"),
                "platform": string(maxLength=50, pattern=r"^[^\x00-\x1f\x7f]*$"),
            },
            ("name",),
            **closed,
        ),
        "LinkIn": obj(
            {
                "campaign_id": ID,
                "influencer_id": ID,
                "destination_url": string(format="uri", maxLength=2048),
                "coupon_code": COUPON,
                "code": string("A vanity short code (optional).", pattern="^[A-Za-z0-9][A-Za-z0-9_-]{2,31}$"),
                "expires_at": TIMESTAMP,
            },
            ("campaign_id", "influencer_id", "destination_url"),
            **closed,
        ),
        "LinkPatch": obj(
            {
                "disabled": boolean(),
                "destination_url": string(format="uri", maxLength=2048),
                "expires_at": nullable(TIMESTAMP),
            },
            minProperties=1,
            **closed,
        ),
        "StoreIn": obj(
            {"name": NAME_IN, "allowed_ips": array(string("An IP address or CIDR block.", format="ipv4"), maxItems=20)},
            ("name",),
            **closed,
        ),
        "FeeIn": obj(
            {
                "campaign_id": ID,
                "influencer_id": ID,
                "amount": MONEY_IN,
                "currency": CURRENCY_IN,
                "date": DATE,
                "note": string(maxLength=500, pattern=r"^[^\x00-\x1f\x7f]*$"),
            },
            ("campaign_id", "influencer_id", "amount"),
            **closed,
        ),
        "FxRateIn": obj(
            {
                "rate": string(
                    "Units of the brand currency per unit of this currency.", pattern=r"^[0-9]{1,9}(\.[0-9]{1,8})?$"
                )
            },
            ("rate",),
            **closed,
        ),
        "ConversionIn": obj(
            {
                "order_id": string(minLength=1, maxLength=128),
                "amount": MONEY_IN,
                "currency": CURRENCY_IN,
                "click_id": string(maxLength=256),
                "coupon_code": string(maxLength=64),
                "status": STATUS,
                "occurred_at": TIMESTAMP,
            },
            ("order_id", "amount", "currency"),
            **closed,
        ),
    }


def _outputs() -> dict[str, Schema]:
    metrics: dict[str, Schema] = {
        "clicks": integer("Non-bot clicks.", minimum=0),
        "bot_clicks": integer(minimum=0),
        "unique_clicks": integer("Distinct (link, visitor, UTC day) among non-bot clicks.", minimum=0),
        "conversions": integer("Attributed approved or pending conversions.", minimum=0),
        "revenue": MONEY,
        "commission": MONEY,
        "fees": MONEY,
        "cost": MONEY,
        "roi": RATIO,
        "conversion_rate": RATIO,
        "epc": RATIO,
        "aov": RATIO,
    }
    group_keys: dict[str, Schema] = {
        "influencer_id": nullable(string()),
        "influencer_name": nullable(string()),
        "campaign_id": nullable(string()),
        "campaign_name": nullable(string()),
        "link_code": nullable(string()),
        "day": string(format="date"),
        "hour": string("YYYY-MM-DDTHH:00 in the report's tz."),
        "country": string(),
        "device": string(),
    }
    created = {"created_at": TIMESTAMP}
    return {
        "ErrorDetail": obj(
            {"code": string("Machine-readable code."), "message": string("A full sentence.")},
            ("code", "message"),
        ),
        "Error": obj({"error": ref("ErrorDetail")}, ("error",)),
        "Brand": obj({"id": ID, "name": string(), "currency": CURRENCY, **created}, ("id", "name", "currency")),
        "NewBrand": {
            "allOf": [
                ref("Brand"),
                obj({"api_key": string("Shown once; stored hashed.", minLength=16)}, ("api_key",)),
            ]
        },
        "Commission": obj(
            {"type": string(enum=["percent", "flat"]), "value": DECIMAL},
            ("type", "value"),
        ),
        "Campaign": obj(
            {
                "id": ID,
                "name": string(),
                "attribution_window_days": integer(minimum=1),
                "commission": ref("Commission"),
                "click_id_param": string(),
                "allowed_domains": array(string()),
                **created,
            },
            ("id", "name", "attribution_window_days", "commission", "click_id_param", "allowed_domains"),
        ),
        "Influencer": obj(
            {"id": ID, "name": string(), "handle": nullable(string()), "platform": nullable(string()), **created},
            ("id", "name", "handle", "platform"),
        ),
        "Link": obj(
            {
                "id": integer(minimum=1),
                "code": string(),
                "short_url": string(format="uri"),
                "destination_url": string(),
                "coupon_code": nullable(string()),
                "campaign_id": ID,
                "influencer_id": ID,
                "disabled": boolean(),
                "expires_at": nullable(TIMESTAMP),
                **created,
            },
            ("id", "code", "short_url", "destination_url", "coupon_code", "campaign_id", "influencer_id", "disabled"),
        ),
        "Store": obj(
            {"id": ID, "name": string(), "allowed_ips": array(string()), **created},
            ("id", "name", "allowed_ips"),
        ),
        "NewStore": {
            "allOf": [
                ref("Store"),
                obj(
                    {
                        "secret": string("Signs postbacks (X-Signature); shown once.", minLength=16),
                        "postback_token": string("Authenticates GET /postback; shown once.", minLength=16),
                    },
                    ("secret", "postback_token"),
                ),
            ]
        },
        "Fee": obj(
            {
                "id": ID,
                "campaign_id": ID,
                "influencer_id": ID,
                "amount": MONEY,
                "currency": CURRENCY,
                "original_amount": MONEY,
                "original_currency": CURRENCY,
                "fx_rate": DECIMAL,
                "date": DATE,
                "note": nullable(string()),
                **created,
            },
            ("id", "campaign_id", "influencer_id", "amount", "currency", "date"),
        ),
        "FxRate": obj(
            {"currency": CURRENCY, "rate": DECIMAL, "base": CURRENCY, "updated_at": nullable(TIMESTAMP)},
            ("currency", "rate", "base"),
        ),
        "Conversion": obj(
            {
                "conversion_id": ID,
                "order_id": string(),
                "status": STATUS,
                "attributed": boolean(),
                "attribution": nullable(string(enum=["click", "coupon"])),
                "link_code": nullable(string()),
                "influencer_id": nullable(ID),
                "campaign_id": nullable(ID),
                "commission": MONEY,
                "amount": MONEY,
                "refunded_amount": MONEY,
                "currency": CURRENCY,
                "duplicate": boolean("True when this exact postback was already accepted."),
            },
            (
                "conversion_id",
                "status",
                "attributed",
                "attribution",
                "link_code",
                "influencer_id",
                "campaign_id",
                "commission",
                "duplicate",
            ),
        ),
        "Metrics": obj(metrics, tuple(metrics)),
        "Totals": obj(
            {**metrics, "unattributed_conversions": integer(minimum=0), "unattributed_revenue": MONEY},
            (*metrics, "unattributed_conversions", "unattributed_revenue"),
        ),
        "ReportRow": {"allOf": [ref("Metrics"), obj(group_keys)]},
        "Report": obj(
            {
                "rows": array(ref("ReportRow")),
                "totals": ref("Totals"),
                "meta": obj(
                    {
                        "from": DATE,
                        "to": DATE,
                        "tz": string(),
                        "group_by": array(string()),
                        "currency": CURRENCY,
                        "source": string(
                            "Where the click figures came from: `cached` (the daily rollup and the cache of "
                            "exact daily unique counts) or `raw` (raw clicks).",
                            enum=["cached", "raw"],
                        ),
                    }
                ),
            },
            ("rows", "totals"),
        ),
    }


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "TRACKER_ADMIN_TOKEN: may create and list brands.",
            },
            "brandKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "A brand API key (shown once at brand creation); acts inside its brand.",
            },
            "storeId": {"type": "apiKey", "in": "header", "name": "X-Store-Id"},
            "storeSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Signature",
                "description": "t=<unix>,v1=<hex HMAC-SHA256(secret, f'{t}.{raw body}')>, t within 300 s.",
            },
        },
        "schemas": {**_outputs(), **_inputs()},
    }


# --- paths ---------------------------------------------------------------------------------------


def _operations_paths() -> dict[str, Any]:
    ops = "operations"
    ready = obj({"status": string(), "checks": {"type": "object"}}, ("status", "checks"))
    return {
        "/healthz": {
            "get": operation(
                "healthz",
                "Liveness: the process answers.",
                ops,
                ok(200, "Alive.", obj({"status": string(enum=["ok"])}, ("status",))),
            )
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Readiness: Redis and ClickHouse reachable, ingest keeping up.",
                ops,
                {
                    **ok(200, "Ready.", ready),
                    **ok(
                        503,
                        "Not ready; the error names the failing dependency.",
                        {"allOf": [ready, obj({"error": ref("ErrorDetail")}, ("error",))]},
                    ),
                },
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "Prometheus text exposition of every stage.",
                ops,
                {
                    "200": {
                        "description": "Prometheus text format 0.0.4.",
                        "content": {"text/plain": {"schema": string()}},
                    }
                },
            )
        },
        "/openapi.json": {
            "get": operation("openapi", "This document.", ops, ok(200, "OpenAPI 3.1 document.", {"type": "object"}))
        },
    }


def _registry_paths() -> dict[str, Any]:
    by_ids = [query("campaign_id", ID), query("influencer_id", ID)]
    return {
        "/api/v1/brands": {
            "post": operation(
                "createBrand",
                "Create a brand and its API key (admin only).",
                "registry",
                {**ok(201, "Created; the API key is shown only here.", ref("NewBrand")), **errors(*WITH_BODY, 403)},
                security=ADMIN,
                request_body=body(ref("BrandIn")),
            ),
            "get": operation(
                "listBrands",
                "All brands (admin token), or the key's own brand.",
                "registry",
                {**ok(200, "Brands.", obj({"items": array(ref("Brand"))}, ("items",))), **errors(*AUTHED)},
                security=[*ADMIN, *BRAND],
            ),
        },
        "/api/v1/campaigns": {
            "post": create("createCampaign", "Create a campaign.", "CampaignIn", "Campaign"),
            "get": list_of("listCampaigns", "The brand's campaigns.", "Campaign"),
        },
        "/api/v1/campaigns/{campaign_id}": {
            "get": get_one("getCampaign", "One campaign.", "Campaign", "campaign_id"),
        },
        "/api/v1/influencers": {
            "post": create("createInfluencer", "Create an influencer.", "InfluencerIn", "Influencer"),
            "get": list_of("listInfluencers", "The brand's influencers.", "Influencer"),
        },
        "/api/v1/influencers/{influencer_id}": {
            "get": get_one("getInfluencer", "One influencer.", "Influencer", "influencer_id"),
        },
        "/api/v1/links": {
            "post": create(
                "createLink", "Mint a tracked short link for an influencer in a campaign.", "LinkIn", "Link", 409
            ),
            "get": list_of(
                "listLinks",
                "The brand's links, optionally filtered.",
                "Link",
                [*by_ids, query("limit", integer(minimum=1, maximum=10_000)), query("offset", integer(minimum=0))],
            ),
        },
        "/api/v1/links/{code}": {
            "get": get_one("getLink", "One link.", "Link", "code"),
            "patch": operation(
                "updateLink",
                "Disable a link, change its destination or expiry (redirects see it within 5 s).",
                "registry",
                {**ok(200, "The updated link.", ref("Link")), **errors(*WITH_BODY, 404)},
                security=BRAND,
                request_body=body(ref("LinkPatch")),
                parameters=[path_param("code", string(minLength=1, maxLength=64))],
            ),
        },
        "/api/v1/stores": {
            "post": operation(
                "createStore",
                "Register a store; its secret and postback token are shown only here.",
                "registry",
                {**ok(201, "Created.", ref("NewStore")), **errors(*WITH_BODY)},
                security=BRAND,
                request_body=body(ref("StoreIn")),
            ),
            "get": list_of("listStores", "The brand's stores (without secrets).", "Store"),
        },
        "/api/v1/stores/{store_id}": {
            "get": get_one("getStore", "One store (without secrets).", "Store", "store_id"),
        },
        "/api/v1/fees": {
            "post": create("createFee", "Record a flat fee paid to an influencer.", "FeeIn", "Fee"),
            "get": list_of("listFees", "The brand's fees, optionally filtered.", "Fee", by_ids),
        },
        "/api/v1/fx-rates": {
            "get": list_of("listFxRates", "The brand's exchange rates.", "FxRate"),
        },
        "/api/v1/fx-rates/{currency}": {
            "put": operation(
                "putFxRate",
                "Set the rate used to convert this currency into the brand currency.",
                "registry",
                {**ok(200, "The rate now in force.", ref("FxRate")), **errors(*WITH_BODY)},
                security=BRAND,
                request_body=body(ref("FxRateIn")),
                parameters=[path_param("currency", CURRENCY_IN)],
            )
        },
    }


def _traffic_paths() -> dict[str, Any]:
    keys = "influencer|campaign|link|day|hour|country|device"
    return {
        "/api/v1/conversions": {
            "post": operation(
                "postConversion",
                "Server-to-server conversion postback, signed with the store secret.",
                "conversions",
                {
                    **ok(202, "Accepted (or a duplicate of an accepted one).", ref("Conversion")),
                    **errors(400, 401, 403, 409, 413, 415, 422, 429, 503),
                },
                security=STORE,
                request_body=body(ref("ConversionIn")),
            )
        },
        "/postback": {
            "get": operation(
                "getPostback",
                "Conversion postback as a URL, for platforms that can only fire one.",
                "conversions",
                {
                    **ok(200, "Accepted (or a duplicate of an accepted one).", ref("Conversion")),
                    **errors(400, 401, 403, 409, 422, 429, 503),
                },
                parameters=[
                    query("store_id", ID, required=True),
                    query("token", string(), "The store's postback_token.", required=True),
                    query("order_id", string(minLength=1, maxLength=128), required=True),
                    query("amount", MONEY_IN, required=True),
                    query("currency", CURRENCY_IN, required=True),
                    query("click_id", string(maxLength=256)),
                    query("coupon_code", string(maxLength=64)),
                    query("status", STATUS),
                ],
            )
        },
        "/api/v1/reports": {
            "get": operation(
                "getReport",
                "Attribution metrics grouped by influencer, campaign, link, day, hour, country or device.",
                "reports",
                {
                    "200": {
                        "description": "Rows and totals (JSON), or the same rows as CSV.",
                        "content": {"application/json": {"schema": ref("Report")}, "text/csv": {"schema": string()}},
                    },
                    **errors(400, 401, 404, 422, 429, 503),
                },
                security=BRAND,
                parameters=[
                    query("from", DATE, "First day, inclusive.", required=True),
                    query("to", DATE, "Last day, inclusive.", required=True),
                    query("group_by", string(pattern=f"^({keys})(,({keys}))*$"), "Keys, comma-separated."),
                    query("campaign_id", ID),
                    query("influencer_id", ID),
                    query("tz", string(maxLength=64), "IANA time zone (default UTC)."),
                    query("format", string(enum=["json", "csv"])),
                ],
            )
        },
        "/dashboard": {
            "get": operation(
                "dashboard",
                "The brand dashboard (a page that reads the reports API with a brand key).",
                "reports",
                {"200": {"description": "HTML page.", "content": {"text/html": {"schema": string()}}}},
            )
        },
        "/{code}": {
            "get": operation(
                "redirect",
                "Follow a short link: 302 to the destination with the click id appended (HEAD too).",
                "redirect",
                {
                    "302": {
                        "description": "Redirect; Location carries the destination, the visitor's query and "
                        "<click_id_param>=<click id>.",
                        "headers": {"Location": {"schema": string(format="uri")}},
                    },
                    **errors(404, 410, 429),
                },
                parameters=[path_param("code", string(pattern="^[A-Za-z0-9]{1,32}$"))],
            )
        },
    }


def _paths() -> dict[str, Any]:
    return {**_operations_paths(), **_registry_paths(), **_traffic_paths()}


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracker",
            "version": __version__,
            "description": "Self-hosted affiliate-link and conversion tracking server. Money travels as "
            'decimal strings; errors answer {"error": {"code", "message"}}.',
        },
        "paths": _paths(),
        "components": _components(),
    }


@cache
def _rendered() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode("utf-8")


async def openapi_endpoint(request: Request) -> Response:
    return Response(_rendered(), media_type="application/json")
