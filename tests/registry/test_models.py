"""The registry's request and answer models, without storage: what is accepted, refused and answered."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from tracker.api.schema import parse_query, validate
from tracker.core.codes import VANITY
from tracker.core.errors import Unprocessable
from tracker.registry.fields import valid_ip_or_network
from tracker.registry.models import (
    BrandIn,
    Campaign,
    CampaignIn,
    Fee,
    FeeIn,
    FxRateIn,
    Influencer,
    Link,
    LinkIn,
    LinkPatch,
    LinkQuery,
)
from tracker.registry.storemodels import NewStore, Store, StoreIn, StorePatch

USD = {"currency": "USD"}
LINK = {"campaign_id": "cmp_x", "influencer_id": "inf_x", "destination_url": "https://shop.example/p"}
FEE = {"campaign_id": "cmp_x", "influencer_id": "inf_x", "amount": "10"}
CAMPAIGN = {"name": "Spring", "commission": {"type": "percent", "value": "10"}}
FUTURE = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)


def refused(model: type[BaseModel], data: dict[str, Any], context: dict[str, Any] | None = None) -> Unprocessable:
    with pytest.raises(Unprocessable) as err:
        validate(model, data, context)
    return err.value


@pytest.mark.parametrize(("raw", "norm"), [("203.0.113.7", "203.0.113.7"), ("10.0.0.0/8", "10.0.0.0/8"),
                                           ("10.1.2.3/8", "10.0.0.0/8"), ("::1", "::1")])
def test_valid_ip_or_network(raw: str, norm: str) -> None:
    assert valid_ip_or_network(raw) == norm


# --- accepted, and what it becomes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data", "context", "expected"),
    [
        (BrandIn, {"name": " Acme "}, None, {"name": "Acme", "currency": "USD"}),
        (BrandIn, {"name": "Acme\n", "currency": "KWD"}, None, {"name": "Acme", "currency": "KWD"}),
        (CampaignIn, CAMPAIGN, USD, {"attribution_window_days": 30, "click_id_param": "click_id",
                                     "allowed_domains": []}),
        (CampaignIn, {**CAMPAIGN, "attribution_window_days": None, "click_id_param": None, "allowed_domains": None},
         USD, {"attribution_window_days": 30, "click_id_param": "click_id", "allowed_domains": []}),
        (CampaignIn, {**CAMPAIGN, "click_id_param": " subid ", "allowed_domains": ["Shop.Example", "*.shop.example"]},
         USD, {"click_id_param": "subid", "allowed_domains": ["shop.example"]}),
        (CampaignIn, {**CAMPAIGN, "commission": {"type": "flat", "value": "500"}}, {"currency": "JPY"},
         {"commission": {"type": "flat", "value": Decimal(500)}}),
        (CampaignIn, {**CAMPAIGN, "commission": {"type": "flat", "value": "1.001"}}, {"currency": "KWD"},
         {"commission": {"type": "flat", "value": Decimal("1.001")}}),
        (CampaignIn, {**CAMPAIGN, "commission": {"type": "percent", "value": "12.5"}}, USD,
         {"commission": {"type": "percent", "value": Decimal("12.5")}}),
        (LinkIn, {**LINK, "coupon_code": " ", "code": ""}, None, {"coupon_code": None, "code": None}),
        (LinkIn, {**LINK, "coupon_code": "ann-10", "code": " spring_sale "}, None,
         {"coupon_code": "ann-10", "code": "spring_sale"}),
        (LinkIn, {**LINK, "expires_at": FUTURE.astimezone().isoformat()}, None, {"expires_at": FUTURE}),
        (LinkIn, {**LINK, "expires_at": FUTURE.isoformat().replace("+00:00", "Z")}, None, {"expires_at": FUTURE}),
        (LinkPatch, {"disabled": None}, None, {"disabled": None, "destination_url": None}),
        (LinkPatch, {"expires_at": None}, None, {"expires_at": None}),
        (StoreIn, {"name": "S", "allowed_ips": [" 203.0.113.7 ", "10.1.2.3/8", "10.0.0.0/8", "2001:db8::/32"]}, None,
         {"allowed_ips": ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]}),
        (StoreIn, {"name": "S", "allowed_ips": None}, None, {"allowed_ips": []}),
        (StoreIn, {"name": "S"}, None, {"platform": "custom", "webhook_secret": None}),
        (StoreIn, {"name": "S", "platform": "shopify", "webhook_secret": "shpss_0123456789abcdef"}, None,
         {"platform": "shopify", "webhook_secret": "shpss_0123456789abcdef"}),
        (StoreIn, {"name": "S", "platform": "woocommerce", "webhook_secret": "w{8}:Q;x!"}, None,
         {"platform": "woocommerce"}),
        (StoreIn, {"name": "S", "platform": "stripe", "webhook_secret": "whsec_abcdefgh"}, None,
         {"platform": "stripe"}),
        (StorePatch, {"webhook_secret": "whsec_abcdefgh"}, None, {"webhook_secret": "whsec_abcdefgh", "name": None}),
        (StorePatch, {"name": "New name", "allowed_ips": []}, None, {"name": "New name", "allowed_ips": []}),
        (CampaignIn, CAMPAIGN, USD, {"recurring_months": 12}),
        (CampaignIn, {**CAMPAIGN, "recurring_months": 0}, USD, {"recurring_months": 0}),
        (CampaignIn, {**CAMPAIGN, "recurring_months": 120}, USD, {"recurring_months": 120}),
        (FeeIn, FEE, USD, {"currency": None, "amount": Decimal(10), "date": datetime.now(UTC).date(), "note": ""}),
        (FeeIn, {**FEE, "amount": "1.001", "currency": "KWD", "date": "2026-11-01"}, USD,
         {"amount": Decimal("1.001"), "currency": "KWD", "date": date(2026, 11, 1)}),
        (FeeIn, {**FEE, "amount": "1500"}, {"currency": "JPY"}, {"amount": Decimal(1500)}),
        (FeeIn, {**FEE, "amount": "2.5", "note": " story ", "date": None}, USD,
         {"amount": Decimal("2.5"), "note": "story", "date": datetime.now(UTC).date()}),
        (FxRateIn, {"rate": "1.0825"}, None, {"rate": Decimal("1.0825")}),
        (FxRateIn, {"rate": "2"}, None, {"rate": Decimal(2)}),
        (FxRateIn, {"rate": "0.00000001"}, None, {"rate": Decimal("0.00000001")}),
    ],
)
def test_accepted(model: type[BaseModel], data: dict[str, Any], context: dict[str, Any] | None,
                  expected: dict[str, Any]) -> None:
    parsed = validate(model, data, context).model_dump()
    assert {k: parsed[k] for k in expected} == expected


def test_a_patch_knows_which_fields_were_sent() -> None:
    assert validate(LinkPatch, {"expires_at": None}).model_fields_set == {"expires_at"}
    assert validate(LinkPatch, {"disabled": True}).model_fields_set == {"disabled"}


# --- refused, with our code and the field named ---------------------------------------------------

REFUSED: list[tuple[type[BaseModel], dict[str, Any], str, str]] = [
    (BrandIn, {"name": "A", "currency": "usd"}, "invalid_currency", "currency"),
    (BrandIn, {"name": "A", "currency": None}, "invalid_currency", "currency"),
    (BrandIn, {"name": "A", "currency": 840}, "invalid_currency", "currency"),
    (BrandIn, {"name": None}, "missing_field", "name"),
    (BrandIn, {"name": "   "}, "invalid_field", "name"),
    (BrandIn, {"name": "A" * 201}, "invalid_field", "name"),
    (BrandIn, {"name": "A\x00B"}, "invalid_field", "name"),
    (BrandIn, {"name": "A", "colour": "red"}, "invalid_field", "colour"),
    (CampaignIn, {**CAMPAIGN, "commission": None}, "missing_field", "commission"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "percent", "value": None}}, "missing_field", "commission.value"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "percent", "value": "10", "cap": 1}}, "invalid_field",
     "'commission' accepts only type and value, got ['cap', 'type', 'value']"),
    (CampaignIn, {**CAMPAIGN, "commission": {"value": "10"}}, "invalid_field", "commission.type"),
    (CampaignIn, {"colour": 1}, "invalid_field", "Unknown field 'colour'"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "percent", "value": "1.00001"}}, "invalid_field",
     "commission.value"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "percent", "value": "Infinity"}}, "invalid_field",
     "commission.value"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "flat", "value": "1e13"}}, "invalid_field", "commission.value"),
    (CampaignIn, {**CAMPAIGN, "commission": {"type": "flat", "value": 1.5}}, "invalid_field", "commission.value"),
    (CampaignIn, {**CAMPAIGN, "allowed_domains": ["shop.example"] * 101}, "invalid_field", "allowed_domains"),
    (CampaignIn, {**CAMPAIGN, "allowed_domains": [" "]}, "invalid_field", "allowed_domains"),
    (CampaignIn, {**CAMPAIGN, "click_id_param": "x" * 65}, "invalid_field", "click_id_param"),
    (CampaignIn, {**CAMPAIGN, "click_id_param": ""}, "invalid_field", "click_id_param"),
    (LinkIn, {**LINK, "destination_url": "ftp://shop.example/"}, "invalid_destination", "destination_url"),
    (LinkIn, {**LINK, "destination_url": "https://shop.example/\ud800"}, "invalid_destination", "destination_url"),
    (LinkIn, {**LINK, "destination_url": None}, "missing_field", "destination_url"),
    (LinkIn, {**LINK, "destination_url": 5}, "invalid_field", "destination_url"),
    (LinkIn, {**LINK, "coupon_code": "-ann"}, "invalid_field", "coupon_code"),
    (LinkIn, {**LINK, "coupon_code": "A" * 65}, "invalid_field", "coupon_code"),
    (LinkIn, {**LINK, "code": "a" * 65}, "invalid_field", "code"),
    (LinkIn, {**LINK, "campaign_id": " "}, "invalid_field", "campaign_id"),
    (LinkIn, {**LINK, "expires_at": "2026-02-30T00:00:00Z"}, "invalid_field", "expires_at"),
    (LinkIn, {**LINK, "expires_at": "2299-12-31T00:00:00Z"}, "invalid_field", "expires_at"),
    (LinkPatch, {}, "invalid_field", "disabled, destination_url, expires_at"),
    (LinkPatch, {"destination_url": None}, "missing_field", "destination_url"),
    (LinkPatch, {"disabled": "true"}, "invalid_field", "disabled"),
    (LinkPatch, {"code": "x"}, "invalid_field", "code"),
    (StoreIn, {"name": "S", "allowed_ips": ["1.2.3"]}, "invalid_field", "allowed_ips"),
    (StoreIn, {"name": "S", "platform": "shopify"}, "missing_field", "webhook_secret"),
    (StoreIn, {"name": "S", "platform": "stripe", "webhook_secret": "sk_live_abcdefgh"}, "invalid_field", "whsec_"),
    (StoreIn, {"name": "S", "webhook_secret": "abcdefghij"}, "invalid_field", "only for stores on"),
    (StoreIn, {"name": "S", "platform": "magento", "webhook_secret": "abcdefghij"}, "invalid_field", "platform"),
    (StoreIn, {"name": "S", "platform": "shopify", "webhook_secret": "short"}, "invalid_field", "webhook_secret"),
    (StoreIn, {"name": "S", "platform": "shopify", "webhook_secret": "has a space"}, "invalid_field",
     "webhook_secret"),
    (StoreIn, {"name": "S", "platform": "shopify", "webhook_secret": "x" * 257}, "invalid_field", "webhook_secret"),
    (StorePatch, {}, "invalid_field", "at least one"),
    (StorePatch, {"secret": "abcdefghij"}, "invalid_field", "secret"),
    (CampaignIn, {**CAMPAIGN, "recurring_months": -1}, "invalid_field", "recurring_months"),
    (CampaignIn, {**CAMPAIGN, "recurring_months": 121}, "invalid_field", "recurring_months"),
    (CampaignIn, {**CAMPAIGN, "recurring_months": "12"}, "invalid_field", "recurring_months"),
    (StoreIn, {"name": "S", "allowed_ips": [5]}, "invalid_field", "allowed_ips"),
    (StoreIn, {"name": "S", "allowed_ips": ["1" * 65]}, "invalid_field", "allowed_ips"),
    (StoreIn, {"name": "S", "allowed_ips": ["10.0.0.1"] * 101}, "invalid_field", "allowed_ips"),
    (FeeIn, {**FEE, "amount": "1.001"}, "invalid_field", "amount"),
    (FeeIn, {**FEE, "amount": "10.5", "currency": "JPY"}, "invalid_field", "amount"),
    (FeeIn, {**FEE, "amount": "1e13"}, "invalid_field", "amount"),
    (FeeIn, {**FEE, "amount": None}, "missing_field", "amount"),
    (FeeIn, {**FEE, "currency": "XXX"}, "invalid_currency", "currency"),
    (FeeIn, {**FEE, "date": "1969-12-31"}, "invalid_field", "date"),
    (FeeIn, {**FEE, "date": "2149-06-07"}, "invalid_field", "date"),
    (FeeIn, {**FEE, "date": "2026-02-30"}, "invalid_field", "date"),
    (FeeIn, {**FEE, "note": "n" * 501}, "invalid_field", "note"),
    (FxRateIn, {"rate": "1e10"}, "invalid_field", "rate"),
    (FxRateIn, {"rate": "NaN"}, "invalid_field", "rate"),
    (FxRateIn, {"rate": None}, "missing_field", "rate"),
]


@pytest.mark.parametrize(("model", "data", "code", "named"), REFUSED)
def test_refused(model: type[BaseModel], data: dict[str, Any], code: str, named: str) -> None:
    err = refused(model, data, USD)
    assert err.code == code
    assert named in err.message


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "10001", "\u00b2", "1.5", " 10", "+5", "1_000", ""])
def test_bad_page_sizes(limit: str) -> None:
    with pytest.raises(Unprocessable) as err:
        parse_query(LinkQuery, {"limit": limit})
    assert "limit" in err.value.message


def test_link_query() -> None:
    q = parse_query(LinkQuery, {"limit": "5", "offset": "10", "campaign_id": "cmp_x"})
    assert (q.limit, q.offset, q.campaign_id, q.influencer_id) == (5, 10, "cmp_x", None)
    assert parse_query(LinkQuery, {}).limit == 1000
    with pytest.raises(Unprocessable):
        parse_query(LinkQuery, {"page": "2"})


# --- answers -------------------------------------------------------------------------------------

CREATED = datetime(2026, 11, 2, 10, 11, 12, 345678, tzinfo=UTC)


def test_link_answer() -> None:
    row = {"brand_id": "brd_x", "id": 7, "code": "Ab3dE5", "campaign_id": "cmp_x", "influencer_id": "inf_x",
           "destination_url": "https://shop.example/", "coupon_code": "", "disabled": 1, "expires_at": None,
           "created_at": CREATED.replace(tzinfo=None), "updated_at": CREATED, "version": 1}
    assert Link.from_row(row, "http://testserver/").dump() == {
        "id": 7, "code": "Ab3dE5", "short_url": "http://testserver/Ab3dE5", "destination_url": "https://shop.example/",
        "coupon_code": None, "campaign_id": "cmp_x", "influencer_id": "inf_x", "disabled": True, "expires_at": None,
        "created_at": "2026-11-02T10:11:12.345Z",
    }


@pytest.mark.parametrize(
    ("currency", "amount", "original", "original_currency", "rate", "out"),
    [
        ("USD", "107.9900", "99.9900", "EUR", "1.08000000", ("107.99", "99.99", "1.08")),
        ("JPY", "1500.0000", "10.0000", "USD", "150.00000000", ("1500", "10.00", "150")),
        ("KWD", "1.0000", "1.0000", "KWD", "1.00000000", ("1.000", "1.000", "1")),
    ],
)
def test_fee_answer_rounds_to_each_currency(currency: str, amount: str, original: str, original_currency: str,
                                            rate: str, out: tuple[str, str, str]) -> None:
    row = {"id": "fee_x", "campaign_id": "cmp_x", "influencer_id": "inf_x", "amount": Decimal(amount),
           "currency": currency, "original_amount": Decimal(original), "original_currency": original_currency,
           "fx_rate": Decimal(rate), "date": date(2026, 11, 1), "note": "", "created_at": CREATED}
    fee = Fee.from_row(row).dump()
    assert (fee["amount"], fee["original_amount"], fee["fx_rate"]) == out
    assert (fee["date"], fee["note"]) == ("2026-11-01", None)


def test_other_answers() -> None:
    record = {"id": "cmp_x", "name": "S", "attribution_window_days": 30,
              "commission": {"type": "percent", "value": Decimal("12.5")}, "click_id_param": "click_id",
              "allowed_domains": [], "recurring_months": 12, "hold_days": 30, "created_at": "2026-11-02T10:11:12.345Z"}
    assert Campaign.model_validate(record).dump() == {**record, "commission": {"type": "percent", "value": "12.5"},
                                                      "fallback_url": None, "archived": False}
    row = {"id": "inf_x", "name": "Bo", "handle": "", "platform": "", "created_at": CREATED}
    assert Influencer.from_row(row).dump()["handle"] is None
    store = {"id": "sto_x", "name": "S", "allowed_ips": ("10.0.0.0/8",), "created_at": CREATED, "secret_nonce": "n"}
    assert NewStore.from_created(store, "https://t.example/", secret="s", postback_token="t").dump() == {
        "id": "sto_x", "name": "S", "allowed_ips": ["10.0.0.0/8"], "platform": "custom", "webhook_url": None,
        "webhook_secret_rotated_at": None, "created_at": "2026-11-02T10:11:12.345Z", "secret": "s",
        "postback_token": "t"}
    shop = {**store, "platform": "shopify", "webhook_secret": "v1.sealed"}
    answer = Store.from_row(shop, "https://t.example/").dump()
    assert answer["webhook_url"] == "https://t.example/api/v1/integrations/shopify/sto_x"
    assert "sealed" not in str(answer) and "secret_nonce" not in str(answer)


# --- the schema says what the code accepts -------------------------------------------------------


def _props(model: type[BaseModel]) -> dict[str, Any]:
    props: dict[str, Any] = model.model_json_schema()["properties"]
    return props


def test_schemas_describe_the_rules() -> None:
    link = _props(LinkIn)
    assert link["code"]["anyOf"][0]["pattern"] == VANITY.pattern
    assert {"KWD", "JPY", "USD"} <= set(_props(BrandIn)["currency"]["enum"])
    assert "anyOf" not in _props(BrandIn)["currency"]  # null is refused there
    assert {"type": "null"} in _props(StoreIn)["allowed_ips"]["anyOf"]  # null means none elsewhere
    assert _props(LinkQuery)["limit"]["maximum"] == 10_000
    assert CampaignIn.model_json_schema()["required"] == ["name", "commission"]
