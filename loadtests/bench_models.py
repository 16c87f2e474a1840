"""msgspec against pydantic v2 on the two request shapes that matter: a postback and a campaign.

Each library decodes the raw JSON bytes and validates them against the same rules
(unknown fields refused, money as a decimal string, enums, lengths, nested rule),
then encodes an answer. Prints microseconds per call, best of five runs.

    python -m loadtests.bench_models
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
import pydantic

MONEY = r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,4})?$"
POSTBACK = json.dumps(
    {
        "order_id": "ORD-10293847",
        "amount": "129.90",
        "currency": "EUR",
        "click_id": "Ab3dE5gH7jK9mN1pQ3sT5vX7zB9dF1hJ3lN5pR7t",
        "coupon_code": "ANN10",
        "status": "approved",
        "occurred_at": "2026-12-04T10:11:12Z",
    }
).encode()
CAMPAIGN = json.dumps(
    {
        "name": "Spring sale",
        "attribution_window_days": 30,
        "commission": {"type": "percent", "value": "10"},
        "click_id_param": "click_id",
        "allowed_domains": ["shop.example", "www.shop.example"],
    }
).encode()


class MPostback(msgspec.Struct, forbid_unknown_fields=True):
    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    amount: Annotated[str, msgspec.Meta(pattern=MONEY)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    click_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    coupon_code: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    status: Literal["pending", "approved", "rejected", "refunded"] = "approved"
    occurred_at: datetime | None = None


class MCommission(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["percent", "flat"]
    value: Annotated[str, msgspec.Meta(pattern=MONEY)]


class MCampaign(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    commission: MCommission
    attribution_window_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 30
    click_id_param: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")] = "click_id"
    allowed_domains: Annotated[list[str], msgspec.Meta(max_length=100)] = []


class MAnswer(msgspec.Struct):
    conversion_id: str
    status: str
    attributed: bool
    commission: Decimal
    duplicate: bool


_strict = pydantic.ConfigDict(extra="forbid", strict=True)


class PPostback(pydantic.BaseModel):
    model_config = _strict
    order_id: Annotated[str, pydantic.Field(min_length=1, max_length=128)]
    amount: Annotated[str, pydantic.Field(pattern=MONEY)]
    currency: Annotated[str, pydantic.Field(pattern=r"^[A-Z]{3}$")]
    click_id: Annotated[str, pydantic.Field(max_length=256)] | None = None
    coupon_code: Annotated[str, pydantic.Field(max_length=64)] | None = None
    status: Literal["pending", "approved", "rejected", "refunded"] = "approved"
    occurred_at: datetime | None = pydantic.Field(default=None, strict=False)


class PCommission(pydantic.BaseModel):
    model_config = _strict
    type: Literal["percent", "flat"]
    value: Annotated[str, pydantic.Field(pattern=MONEY)]


class PCampaign(pydantic.BaseModel):
    model_config = _strict
    name: Annotated[str, pydantic.Field(min_length=1, max_length=200)]
    commission: PCommission
    attribution_window_days: Annotated[int, pydantic.Field(ge=1, le=365)] = 30
    click_id_param: Annotated[str, pydantic.Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")] = "click_id"
    allowed_domains: Annotated[list[str], pydantic.Field(max_length=100)] = []


class PAnswer(pydantic.BaseModel):
    conversion_id: str
    status: str
    attributed: bool
    commission: Decimal
    duplicate: bool


def main() -> None:
    m_pb, m_cmp = msgspec.json.Decoder(MPostback), msgspec.json.Decoder(MCampaign)
    m_enc = msgspec.json.Encoder(decimal_format="string")
    p_pb, p_cmp = pydantic.TypeAdapter(PPostback), pydantic.TypeAdapter(PCampaign)
    ans = {"conversion_id": "cnv_1", "status": "approved", "attributed": True,
           "commission": Decimal("12.99"), "duplicate": False}
    cases = {
        "postback decode+validate": (lambda: m_pb.decode(POSTBACK), lambda: p_pb.validate_json(POSTBACK)),
        "campaign decode+validate": (lambda: m_cmp.decode(CAMPAIGN), lambda: p_cmp.validate_json(CAMPAIGN)),
        "answer encode": (lambda: m_enc.encode(MAnswer(**ans)), lambda: PAnswer(**ans).model_dump_json()),
    }
    print(f"| {'case':28} | {'msgspec µs':>11} | {'pydantic µs':>12} | {'pydantic / msgspec':>18} |")
    print(f"|{'-' * 30}|{'-' * 12}:|{'-' * 13}:|{'-' * 19}:|")
    for name, (m, p) in cases.items():
        tm = _best(m)
        tp = _best(p)
        print(f"| {name:28} | {tm:11.2f} | {tp:12.2f} | {tp / tm:18.1f} |")
    # Reference: the standard library's parse alone, without any validation.
    loads = _best(lambda: json.loads(POSTBACK, parse_float=Decimal))
    print(f"\njson.loads of the postback (no validation): {loads:.2f} µs")


def _best(fn: Callable[[], object]) -> float:
    """Microseconds per call, best of five runs of 20,000."""
    return min(timeit.repeat(fn, number=20_000, repeat=5)) / 20_000 * 1e6


if __name__ == "__main__":
    main()
