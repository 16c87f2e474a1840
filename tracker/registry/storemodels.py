"""Request and answer shapes of the store routes (``tracker.registry.models`` holds the rest).

A store on a platform (Shopify, WooCommerce, Stripe) carries the platform's webhook
signing secret, sent once and never answered; its answers carry the ``webhook_url``
to paste into the platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from tracker.api.schema import Answer, Timestamp, invalid
from tracker.registry.fields import IpList, Name
from tracker.registry.models import Body, patch_schema

StorePlatform = Literal["custom", "shopify", "woocommerce", "stripe"]
# A platform's signing secret as pasted: printable, no spaces (Stripe's start with whsec_).
WebhookSecret = Annotated[str, Field(min_length=8, max_length=256, pattern=r"^[\x21-\x7e]+$")]


def _secret_fits(platform: str, secret: str | None, *, creating: bool) -> None:
    if platform == "custom":
        if secret is not None:
            raise invalid(
                "invalid_field", "Field 'webhook_secret' is only for stores on shopify, woocommerce or stripe"
            )
        return
    if secret is None:
        if creating:
            raise invalid("missing_field", f"Field 'webhook_secret' is required for a {platform} store: paste the "
                          "signing secret the platform shows for its webhooks (docs/STORES.md)")
        return
    if platform == "stripe" and not secret.startswith("whsec_"):
        raise invalid("invalid_field", "Field 'webhook_secret' of a Stripe store is the endpoint's signing secret, "
                      "which starts with whsec_ (Developers > Webhooks > the endpoint > Signing secret)")


class StoreIn(Body):
    """`webhook_secret`: the platform's webhook signing secret, required for `shopify`, `woocommerce` and `stripe`
    stores, refused for `custom` ones; kept encrypted and never shown again."""

    name: Name
    allowed_ips: IpList = []
    platform: StorePlatform = "custom"
    webhook_secret: WebhookSecret | None = None

    @model_validator(mode="after")
    def _secret(self) -> StoreIn:
        _secret_fits(self.platform, self.webhook_secret, creating=True)
        return self


class StorePatch(Body):
    """Only the fields sent change. A new `webhook_secret` replaces the old one, which still verifies webhooks
    for 24 hours (so deliveries signed before the platform switched are not refused)."""

    model_config = ConfigDict(json_schema_extra=patch_schema)

    name: Name | None = None
    allowed_ips: IpList | None = None
    webhook_secret: WebhookSecret | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_change(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data:
            raise invalid("invalid_field", "Send at least one of name, allowed_ips, webhook_secret")
        return data



def webhook_url(base_url: str, platform: str, store_id: str) -> str | None:
    """Where a platform store's webhooks go: ``<public-url>/api/v1/integrations/<platform>/<store_id>``."""
    if platform == "custom":
        return None
    return f"{base_url.rstrip('/')}/api/v1/integrations/{platform}/{store_id}"


class Store(Answer):
    id: str
    name: str
    allowed_ips: list[str]
    platform: StorePlatform
    webhook_url: str | None = Field(
        description="Paste into the platform's webhook settings (null for a custom store, which sends postbacks)."
    )
    webhook_secret_rotated_at: Timestamp | None = Field(description="When the webhook secret was last replaced.")
    created_at: Timestamp

    @classmethod
    def from_row(cls, row: Mapping[str, Any], base_url: str) -> Store:
        """``base_url``: the public URL the webhook URL starts with."""
        platform: StorePlatform = row.get("platform") or "custom"
        return cls(
            id=row["id"], name=row["name"], allowed_ips=list(row["allowed_ips"]), platform=platform,
            webhook_url=webhook_url(base_url, platform, row["id"]),
            webhook_secret_rotated_at=row.get("webhook_secret_rotated_at"), created_at=row["created_at"],
        )


class NewStore(Store):
    secret: str = Field(description="Signs postbacks (X-Signature); shown this once.")
    postback_token: str = Field(description="Authenticates GET /postback; shown this once.")

    @classmethod
    def from_created(cls, row: Mapping[str, Any], base_url: str, *, secret: str, postback_token: str) -> NewStore:
        store = Store.from_row(row, base_url).model_dump()
        return cls.model_validate({**store, "secret": secret, "postback_token": postback_token})



class StoreList(Answer):
    items: list[Store]
