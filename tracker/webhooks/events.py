"""Webhook events: their types, ids and bodies (pure: no Redis, no network).

An event is ``{type, timestamp, data}`` (the Standard Webhooks payload), serialized
once, when it enters the outbox, so every attempt sends (and signs) the same bytes.
Its id (``webhook-id``) is derived from what it describes, so the same fact always
gets the same id: a receiver can use it as an idempotency key across retries, manual
re-sends and a stream entry read twice after a crash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tracker.money import lifecycle

DEFAULT_HOLD_DAYS = 30

CONVERSION_CREATED = "conversion.created"
CONVERSION_UPDATED = "conversion.updated"
PAYOUT_CREATED = "payout.created"
PAYOUT_PAID = "payout.paid"
TYPES: tuple[str, ...] = (CONVERSION_CREATED, CONVERSION_UPDATED, PAYOUT_CREATED, PAYOUT_PAID)

# The fields of a conversion a webhook carries: the postback answer's and the ledger's
# (no click id, no customer data), money as decimal strings, instants in ISO 8601 UTC.
# ``commission_status`` is the commission's status as of the version (at its ``updated_at``,
# ``tracker.money.lifecycle``); a status that changes with time alone (pending becoming
# payable when the hold ends) sends no event.
CONVERSION_FIELDS: tuple[str, ...] = (
    "conversion_id", "order_id", "status", "attributed", "attribution", "link_code", "influencer_id",
    "campaign_id", "store_id", "currency", "amount", "refunded_amount", "commission", "original_currency",
    "original_amount", "original_refunded_amount", "fx_rate", "coupon_code", "occurred_at", "updated_at", "version",
    "commission_status",
)
_INSTANTS = ("occurred_at", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    brand_id: str
    object_id: str  # deliveries of one object keep their order
    body: bytes

    def fields(self) -> dict[str, str | bytes]:
        """The event as an outbox stream entry."""
        return {"id": self.id, "type": self.type, "brand": self.brand_id, "object": self.object_id, "body": self.body}

    @classmethod
    def from_fields(cls, f: dict[bytes, bytes]) -> Event:
        return cls(f[b"id"].decode(), f[b"type"].decode(), f[b"brand"].decode(), f[b"object"].decode(), f[b"body"])


def event_id(key: str) -> str:
    """``msg_`` + 24 hex digits of the sha256 of what the event describes (no '.', as the spec asks)."""
    return "msg_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def iso(value: str | datetime) -> str:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(event_type: str, timestamp: str, data: dict[str, Any]) -> bytes:
    payload = {"type": event_type, "timestamp": timestamp, "data": data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def commission_status(row: dict[str, Any], paid: bool) -> str | None:
    """The commission's status as of a stream row's version (None: unattributed, no commission)."""
    when = datetime.fromisoformat(str(row["updated_at"]))
    return lifecycle.commission_status({
        "attributed": int(row.get("attributed") or 0), "status": row["status"], "review": int(row.get("review") or 0),
        "occurred_at": datetime.fromisoformat(str(row["occurred_at"])),
        "hold_days": DEFAULT_HOLD_DAYS if row.get("hold_days") in (None, "") else int(row["hold_days"]),
    }, when, paid)


def conversion_data(row: dict[str, Any], paid: bool = False) -> dict[str, Any]:
    """A conversion stream row (``tracker.core.events.encode_conversion``) as a webhook shows it;
    ``paid``: its commission is in a payout marked paid."""
    data: dict[str, Any] = {}
    for name in CONVERSION_FIELDS:
        value = row.get(name)
        if name == "commission_status":
            value = commission_status(row, paid)
        elif name in _INSTANTS and value:
            value = iso(value)
        elif name == "attributed":
            value = bool(int(value or 0))
        elif name == "version":
            value = int(value or 0)
        elif name in ("attribution", "link_code", "influencer_id", "campaign_id", "coupon_code") and value == "":
            value = None
        elif value is not None and not isinstance(value, str | bool | int):
            value = str(value)
        data[name] = value
    return data


def from_conversion(raw: bytes | str, paid: bool = False) -> Event:
    """The event of one conversion stream entry: version 1 is ``conversion.created``, later ones updates."""
    row: dict[str, Any] = json.loads(raw)
    version = int(row["version"])
    kind = CONVERSION_CREATED if version == 1 else CONVERSION_UPDATED
    brand_id = str(row["brand_id"])
    ident = event_id(f"conversion:{brand_id}:{row['order_id']}:{version}")
    data = conversion_data(row, paid)
    return Event(ident, kind, brand_id, str(row["conversion_id"]), body(kind, data["updated_at"], data))


def of(brand_id: str, event_type: str, object_id: str, data: dict[str, Any], *, key: str | None = None,
       timestamp: datetime | None = None) -> Event:
    """Any other event (payouts): ``key`` names the fact (default ``type:object_id``, once per object)."""
    if event_type not in TYPES:
        raise ValueError(f"{event_type!r} is not a webhook event type ({', '.join(TYPES)}).")
    when = iso(timestamp or datetime.now(UTC))
    return Event(event_id(key or f"{event_type}:{brand_id}:{object_id}"), event_type, brand_id, object_id,
                 body(event_type, when, data))
