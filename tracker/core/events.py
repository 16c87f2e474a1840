"""The shapes that travel through the Redis streams, and the ClickHouse columns they become.

Leaf module. The redirect produces ``ClickEvent`` (only what the response or
privacy needs: no user-agent parsing, no bot verdict, no IP); the ingest worker
decodes it, enriches it (``tracker.ingest.enrich``) and inserts ``CLICK_COLUMNS``.
Postbacks produce conversion rows already complete (``CONVERSION_COLUMNS``).

Stream entries carry one field, ``e``: a compact JSON array for clicks (fast to
encode on the hot path), a JSON object for conversions. A field ``r=1`` marks a
click replayed from the local spool (it may already have reached the stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # C-accelerated, ensure_ascii=False
from typing import Any

CLICK_VERSION = 1

CLICK_COLUMNS: tuple[str, ...] = (
    "click_id",
    "ts",
    "brand_id",
    "campaign_id",
    "influencer_id",
    "link_id",
    "link_code",
    "visitor_hash",
    "country",
    "device",
    "browser",
    "os",
    "referer_host",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "is_bot",
    "bot_reason",
)

CONVERSION_COLUMNS: tuple[str, ...] = (
    "brand_id",
    "order_id",
    "version",
    "conversion_id",
    "store_id",
    "status",
    "currency",
    "amount",
    "refunded_amount",
    "original_currency",
    "original_amount",
    "original_refunded_amount",
    "fx_rate",
    "commission",
    "attributed",
    "attribution",
    "click_id",
    "link_id",
    "link_code",
    "campaign_id",
    "influencer_id",
    "coupon_code",
    "occurred_at",
    "created_at",
    "updated_at",
    "customer_hash",
    "email_hash",
    "platform_state",
    "commission_rule",
    "hold_days",
    "review",
    "change",
    "reason",
)

# Columns added after the first conversions were streamed, with the value an older entry or state has.
CONVERSION_DEFAULTS: dict[str, Any] = {
    "customer_hash": "", "email_hash": "", "platform_state": "",
    "commission_rule": "", "hold_days": 30, "review": 0, "change": "", "reason": "",
}

UTM_KEYS: tuple[str, ...] = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

# Why a request is a bot before any user-agent parsing: known from the request itself.
HINT_NONE = ""
HINT_HEAD = "head"
HINT_PREFETCH = "prefetch"


@dataclass(slots=True)
class ClickEvent:
    click_id: str
    ts_ms: int
    brand_id: str
    campaign_id: str
    influencer_id: str
    link_id: int
    link_code: str
    visitor_hash: int
    country: str
    user_agent: str
    referer: str
    utm: tuple[str, str, str, str, str]
    hint: str = HINT_NONE

    def encode(self) -> bytes:
        # Byte for byte what json.dumps([...], separators=(",", ":"), ensure_ascii=False) gives,
        # at a quarter of its cost (this runs once per click on the redirect's hot path).
        s = _json_string
        u = self.utm
        return (
            f"[{CLICK_VERSION},{s(self.click_id)},{int(self.ts_ms)},{s(self.brand_id)},{s(self.campaign_id)},"
            f"{s(self.influencer_id)},{int(self.link_id)},{s(self.link_code)},{int(self.visitor_hash)},"
            f"{s(self.country)},{s(self.user_agent)},{s(self.referer)},"
            f"{s(u[0])},{s(u[1])},{s(u[2])},{s(u[3])},{s(u[4])},{s(self.hint)}]"
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> ClickEvent:
        """Parse an entry; raises ValueError on anything malformed (a poison entry)."""
        try:
            v = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"click entry is not JSON: {exc}") from None
        if not isinstance(v, list) or len(v) != 18 or v[0] != CLICK_VERSION:
            raise ValueError("click entry has the wrong shape or version")
        (_, click_id, ts_ms, brand, campaign, influencer, link_id, code, visitor, country, ua, ref, *rest) = v
        utm, hint = rest[:5], rest[5]
        if not (isinstance(click_id, str) and click_id and isinstance(ts_ms, int) and isinstance(link_id, int)):
            raise ValueError("click entry has a bad click id, time or link id")
        if not isinstance(visitor, int) or not 0 <= visitor < 2**64:
            raise ValueError("click entry has a bad visitor hash")
        strings = (brand, campaign, influencer, code, country, ua, ref, *utm, hint)
        if not all(isinstance(s, str) for s in strings):
            raise ValueError("click entry has a non-string field")
        return cls(
            click_id, ts_ms, brand, campaign, influencer, link_id, code, visitor, country, ua, ref,
            (utm[0], utm[1], utm[2], utm[3], utm[4]), hint,
        )


def encode_conversion(row: dict[str, Any]) -> bytes:
    """A conversion row as JSON (Decimal and datetime as strings); decoded by ingest."""
    missing = [c for c in CONVERSION_COLUMNS if c not in row and c not in CONVERSION_DEFAULTS]
    if missing:
        raise ValueError(f"conversion row lacks {', '.join(missing)}")
    values = {c: row.get(c, CONVERSION_DEFAULTS.get(c)) for c in CONVERSION_COLUMNS}
    return json.dumps(values, default=str, separators=(",", ":")).encode()
