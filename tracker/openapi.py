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
    429: "Rate limited; retry after the Retry-After header.",
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
MONEY_IN = {
    "description": 'A positive decimal amount; a string ("49.90") keeps it exact.',
    "anyOf": [
        string(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$"),
        {"type": "number", "minimum": 0, "maximum": 1e12},
    ],
}
CURRENCY = string("ISO 4217 code.", pattern="^[A-Z]{3}$")
ID = string("Opaque identifier.", minLength=1, maxLength=64)
RATIO = nullable({"anyOf": [{"type": "number"}, MONEY]})
DATE = string("A calendar date, YYYY-MM-DD.", format="date")
TIMESTAMP = string("An ISO 8601 timestamp.", format="date-time")


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def ok(status: int, description: str, schema: Schema) -> dict[str, Any]:
    return {str(status): {"description": description, "content": json_content(schema)}}


def errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": ERROR_STATUSES[s], "content": json_content(ref("Error"))} for s in statuses
    }


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        p["description"] = description
    return p


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
# Auth failures and the generic request errors every authenticated JSON route can answer.
AUTHED = (400, 401, 413, 415, 429, 503)


# --- component schemas -------------------------------------------------------------------------


def _components() -> dict[str, Any]:
    commission = obj(
        {
            "type": string(enum=["percent", "flat"]),
            "value": {"anyOf": [MONEY, {"type": "number", "minimum": 0}]},
        },
        ("type", "value"),
    )
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
    metric_names = tuple(metrics)
    group_keys: dict[str, Schema] = {
        "influencer_id": nullable(ID),
        "influencer_name": nullable(string()),
        "campaign_id": nullable(ID),
        "campaign_name": nullable(string()),
        "link_code": nullable(string()),
        "day": string(format="date"),
        "hour": string("YYYY-MM-DDTHH:00 in the report's tz."),
        "country": string(),
        "device": string(),
    }
    return {
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "TRACKER_ADMIN_TOKEN: may create brands.",
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
        "schemas": {
            "ErrorDetail": obj(
                {"code": string("Machine-readable code."), "message": string("A full sentence.")},
                ("code", "message"),
            ),
            "Error": obj({"error": ref("ErrorDetail")}, ("error",)),
            "BrandIn": obj(
                {"name": string(minLength=1, maxLength=200), "currency": CURRENCY},
                ("name",),
            ),
            "Brand": obj(
                {
                    "id": ID,
                    "name": string(),
                    "currency": CURRENCY,
                    "api_key": string("Shown once; stored hashed."),
                },
                ("id", "name", "currency", "api_key"),
            ),
            "Commission": commission,
            "CampaignIn": obj(
                {
                    "name": string(minLength=1, maxLength=200),
                    "attribution_window_days": integer(minimum=1, maximum=365),
                    "commission": ref("Commission"),
                    "click_id_param": string(pattern="^[A-Za-z_][A-Za-z0-9_]{0,31}$"),
                    "allowed_domains": array(string(), maxItems=50),
                },
                ("name", "commission"),
            ),
            "Campaign": obj(
                {
                    "id": ID,
                    "name": string(),
                    "attribution_window_days": integer(),
                    "commission": ref("Commission"),
                    "click_id_param": string(),
                    "allowed_domains": array(string()),
                },
                ("id", "name", "attribution_window_days", "commission", "click_id_param", "allowed_domains"),
            ),
            "InfluencerIn": obj(
                {
                    "name": string(minLength=1, maxLength=200),
                    "handle": nullable(string(maxLength=200)),
                    "platform": nullable(string(maxLength=50)),
                },
                ("name",),
            ),
            "Influencer": obj(
                {"id": ID, "name": string(), "handle": nullable(string()), "platform": nullable(string())},
                ("id", "name"),
            ),
            "LinkIn": obj(
                {
                    "campaign_id": ID,
                    "influencer_id": ID,
                    "destination_url": string(format="uri", maxLength=2048),
                    "coupon_code": nullable(string(maxLength=64)),
                },
                ("campaign_id", "influencer_id", "destination_url"),
            ),
            "LinkPatch": obj(
                {"disabled": boolean(), "destination_url": string(format="uri", maxLength=2048)},
            ),
            "Link": obj(
                {
                    "id": ID,
                    "code": string(),
                    "short_url": string(),
                    "destination_url": string(),
                    "coupon_code": nullable(string()),
                    "campaign_id": ID,
                    "influencer_id": ID,
                    "disabled": boolean(),
                },
                ("id", "code", "short_url", "destination_url", "coupon_code"),
            ),
            "StoreIn": obj(
                {
                    "name": string(minLength=1, maxLength=200),
                    "allowed_ips": array(string("An IP address or CIDR block."), maxItems=100),
                },
                ("name",),
            ),
            "Store": obj(
                {
                    "id": ID,
                    "name": string(),
                    "secret": string("Signs postbacks (X-Signature); shown once."),
                    "postback_token": string("Authenticates GET /postback; shown once."),
                },
                ("id", "name", "secret", "postback_token"),
            ),
            "FeeIn": obj(
                {
                    "campaign_id": ID,
                    "influencer_id": ID,
                    "amount": MONEY_IN,
                    "currency": CURRENCY,
                    "date": DATE,
                    "note": nullable(string(maxLength=500)),
                },
                ("campaign_id", "influencer_id", "amount"),
            ),
            "Fee": obj(
                {
                    "id": ID,
                    "campaign_id": ID,
                    "influencer_id": ID,
                    "amount": MONEY,
                    "currency": CURRENCY,
                    "date": DATE,
                },
                ("id",),
            ),
            "ConversionIn": obj(
                {
                    "order_id": string(minLength=1, maxLength=128),
                    "amount": MONEY_IN,
                    "currency": CURRENCY,
                    "click_id": nullable(string(maxLength=256)),
                    "coupon_code": nullable(string(maxLength=64)),
                    "status": string(enum=["pending", "approved", "rejected", "refunded"]),
                    "occurred_at": TIMESTAMP,
                },
                ("order_id", "amount", "currency"),
            ),
            "Conversion": obj(
                {
                    "conversion_id": ID,
                    "status": string(enum=["pending", "approved", "rejected", "refunded"]),
                    "attributed": boolean(),
                    "attribution": nullable(string(enum=["click", "coupon"])),
                    "link_code": nullable(string()),
                    "influencer_id": nullable(ID),
                    "campaign_id": nullable(ID),
                    "commission": MONEY,
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
            "Metrics": obj(metrics, metric_names),
            "Totals": obj(
                {
                    **metrics,
                    "unattributed_conversions": integer(minimum=0),
                    "unattributed_revenue": MONEY,
                },
                (*metric_names, "unattributed_conversions", "unattributed_revenue"),
            ),
            "ReportRow": {"allOf": [ref("Metrics"), obj(group_keys)]},
            "Report": obj({"rows": array(ref("ReportRow")), "totals": ref("Totals")}, ("rows", "totals")),
        },
    }


def _items(schema: Schema) -> Schema:
    return obj({"items": array(schema)}, ("items",))


# --- paths ---------------------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    ops = "operations"
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
                    **ok(200, "Ready.", obj({"status": string(), "checks": {"type": "object"}}, ("status",))),
                    **ok(
                        503,
                        "Not ready; the error names the failing dependency.",
                        obj(
                            {"status": string(), "checks": {"type": "object"}, "error": ref("ErrorDetail")},
                            ("status", "error"),
                        ),
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
            "get": operation(
                "openapi",
                "This document.",
                ops,
                ok(200, "OpenAPI 3.1 document.", {"type": "object"}),
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
        "/api/v1/brands": {
            "post": operation(
                "createBrand",
                "Create a brand and its API key (admin only).",
                "registry",
                {
                    **ok(201, "Created; the API key is shown only here.", ref("Brand")),
                    **errors(*AUTHED, 403, 422),
                },
                security=ADMIN,
                request_body=body(ref("BrandIn")),
            )
        },
        "/api/v1/campaigns": {
            "post": operation(
                "createCampaign",
                "Create a campaign.",
                "registry",
                {**ok(201, "Created.", ref("Campaign")), **errors(*AUTHED, 422)},
                security=BRAND,
                request_body=body(ref("CampaignIn")),
            ),
            "get": operation(
                "listCampaigns",
                "The brand's campaigns.",
                "registry",
                {**ok(200, "Campaigns.", _items(ref("Campaign"))), **errors(401, 429, 503)},
                security=BRAND,
            ),
        },
        "/api/v1/influencers": {
            "post": operation(
                "createInfluencer",
                "Create an influencer.",
                "registry",
                {**ok(201, "Created.", ref("Influencer")), **errors(*AUTHED, 422)},
                security=BRAND,
                request_body=body(ref("InfluencerIn")),
            )
        },
        "/api/v1/links": {
            "post": operation(
                "createLink",
                "Mint a tracked short link for an influencer in a campaign.",
                "registry",
                {**ok(201, "Created.", ref("Link")), **errors(*AUTHED, 404, 409, 422)},
                security=BRAND,
                request_body=body(ref("LinkIn")),
            ),
            "get": operation(
                "listLinks",
                "The brand's links, optionally filtered.",
                "registry",
                {**ok(200, "Links.", _items(ref("Link"))), **errors(400, 401, 429, 503)},
                security=BRAND,
                parameters=[query("campaign_id", ID), query("influencer_id", ID)],
            ),
        },
        "/api/v1/links/{code}": {
            "patch": operation(
                "updateLink",
                "Disable a link or change its destination (redirects see it within 5 s).",
                "registry",
                {**ok(200, "The updated link.", ref("Link")), **errors(*AUTHED, 404, 422)},
                security=BRAND,
                request_body=body(ref("LinkPatch")),
                parameters=[{"name": "code", "in": "path", "required": True, "schema": string(maxLength=64)}],
            )
        },
        "/api/v1/stores": {
            "post": operation(
                "createStore",
                "Register a store; its secret and postback token are shown only here.",
                "registry",
                {**ok(201, "Created.", ref("Store")), **errors(*AUTHED, 422)},
                security=BRAND,
                request_body=body(ref("StoreIn")),
            )
        },
        "/api/v1/fees": {
            "post": operation(
                "createFee",
                "Record a flat fee paid to an influencer.",
                "registry",
                {**ok(201, "Created.", ref("Fee")), **errors(*AUTHED, 404, 422)},
                security=BRAND,
                request_body=body(ref("FeeIn")),
            )
        },
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
                    query("amount", string(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$"), required=True),
                    query("currency", CURRENCY, required=True),
                    query("click_id", string(maxLength=256)),
                    query("coupon_code", string(maxLength=64)),
                    query("status", string(enum=["pending", "approved", "rejected", "refunded"])),
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
                        "content": {
                            "application/json": {"schema": ref("Report")},
                            "text/csv": {"schema": string()},
                        },
                    },
                    **errors(400, 401, 404, 422, 429, 503),
                },
                security=BRAND,
                parameters=[
                    query("from", DATE, "First day, inclusive.", required=True),
                    query("to", DATE, "Last day, inclusive.", required=True),
                    query(
                        "group_by",
                        string(
                            pattern="^(influencer|campaign|link|day|hour|country|device)"
                            "(,(influencer|campaign|link|day|hour|country|device))*$"
                        ),
                        "One or more keys, comma-separated.",
                    ),
                    query("campaign_id", ID),
                    query("influencer_id", ID),
                    query("tz", string(maxLength=64), "IANA time zone (default UTC)."),
                    query("format", string(enum=["json", "csv"])),
                ],
            )
        },
        "/{code}": {
            "get": operation(
                "redirect",
                "Follow a short link: 302 to the destination with the click id appended.",
                "redirect",
                {
                    "302": {
                        "description": "Redirect; Location carries the destination, the visitor's query and "
                        "<click_id_param>=<click id>.",
                        "headers": {"Location": {"schema": string(format="uri")}},
                    },
                    **errors(404, 410),
                },
                parameters=[
                    {
                        "name": "code",
                        "in": "path",
                        "required": True,
                        "schema": string(pattern="^[A-Za-z0-9]{1,32}$"),
                    }
                ],
            )
        },
    }


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
