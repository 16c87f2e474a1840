"""Request and answer shapes of ``/api/v1/webhooks``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from tracker.api.schema import Answer, Query, Timestamp, invalid
from tracker.registry.fields import digits
from tracker.registry.models import Body
from tracker.webhooks import guard
from tracker.webhooks.events import TYPES

EventType = Literal["conversion.created", "conversion.updated", "payout.created", "payout.paid"]


def _url(value: str) -> str:
    problem = guard.url_problem(value.strip())
    if problem is not None:
        raise invalid("invalid_url", problem)
    return value.strip()


def _events(value: list[str]) -> list[str]:
    if not value:
        raise invalid("invalid_field", f"must name at least one event: {', '.join(TYPES)}")
    return list(dict.fromkeys(value))


Url = Annotated[str, AfterValidator(_url), WithJsonSchema({"type": "string", "format": "uri", "maxLength": 2000})]
Events = Annotated[list[EventType], Field(max_length=len(TYPES)), AfterValidator(_events)]


class WebhookIn(Body):
    url: Url
    events: Events


class WebhookPatch(Body):
    url: Url | None = None
    events: Events | None = None
    enabled: bool | None = Field(
        None, description="true re-enables a disabled endpoint; its waiting deliveries resume."
    )


class Webhook(Answer):
    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="Why it was disabled (by the sender after failures, or 410).")
    failing_since: Timestamp | None = Field(description="First failure since the last successful delivery.")
    last_success_at: Timestamp | None
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp


class NewWebhook(Webhook):
    secret: str = Field(description="whsec_ + base64 of the 32-byte signing key: shown this once.")


class WebhookList(Answer):
    items: list[Webhook]


class DeliveryQuery(Query):
    limit: Annotated[int, Field(ge=1, le=500), BeforeValidator(digits)] = 100
    cursor: Annotated[int, Field(ge=0, le=10**6), BeforeValidator(digits)] | None = None
    status: Literal["pending", "succeeded", "failed", "cancelled"] | None = None


class Delivery(Answer):
    id: str
    event_id: str = Field(description="The webhook-id header: the same on every attempt.")
    type: str
    object_id: str
    status: Literal["pending", "succeeded", "failed", "cancelled"]
    attempts: int
    response_code: int | None = Field(description="The receiver's last HTTP status; null if it never answered.")
    last_error: str | None
    created_at: Timestamp
    last_attempt_at: Timestamp | None
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    payload: dict[str, Any] = Field(description="The body sent: {type, timestamp, data}.")


class DeliveryList(Answer):
    items: list[Delivery]
    next_cursor: int | None
