"""``PATCH /api/v1/campaigns/{campaign_id}``: rename a campaign, change its rule, hold, window or months.

A new commission or hold becomes a new entry of the campaign's rule history, in force
from now (``tracker.registry.campaigns``): an order is priced by the rule in force when it
occurred, so conversions recorded before and orders that occurred before keep theirs. A
new window reaches the link records at once (the redirect and postbacks read it from
there); the audit log records the change.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import invalid, parse_body
from tracker.core import keys
from tracker.core.errors import NotFound
from tracker.registry.fields import FallbackUrl, Name
from tracker.registry.links import record
from tracker.registry.models import Body, Campaign, CommissionIn, patch_schema
from tracker.services import services

_FIELDS = ("name", "commission", "attribution_window_days", "hold_days", "recurring_months", "fallback_url",
           "archived")


class CampaignPatch(Body):
    """Only the fields sent change. A new `commission` or `hold_days` applies to orders that occur from now on."""

    model_config = ConfigDict(json_schema_extra=patch_schema)

    name: Name | None = None
    commission: CommissionIn | None = None
    attribution_window_days: int | None = Field(default=None, ge=1, le=365)
    hold_days: int | None = Field(default=None, ge=0, le=365)
    recurring_months: int | None = Field(default=None, ge=0, le=120)
    # The brand app (#17): where followers of a dead link go ("" removes it), and archiving.
    fallback_url: FallbackUrl | None = None
    archived: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_change(cls, data: Any) -> Any:
        if isinstance(data, dict) and not any(data.get(f) is not None for f in _FIELDS):
            raise invalid("invalid_field", f"Send at least one of {', '.join(_FIELDS)}")
        return data


@api("PATCH", "/api/v1/campaigns/{campaign_id}", Operation(
    "Change a campaign: name, commission, window, hold, recurring months (new rules apply to later orders), "
    "fallback URL, archived.",
    "registry", ("brand",), body=CampaignPatch, answers={200: Campaign},
    errors=(401, 403, 503, 400, 413, 422, 404, 409),
))
async def update_campaign(request: Request) -> Response:
    brand = await auth.brand_of(request)
    cid = request.path_params["campaign_id"]
    body = parse_body(CampaignPatch, await http.read_body(request), {"currency": brand["currency"]})
    registry = services(request).registry
    old = await registry.get_campaign(brand["id"], cid)
    if old is None:
        raise NotFound(f"Campaign {cid!r} does not exist.")
    changes: dict[str, Any] = {f: getattr(body, f) for f in _FIELDS if f in body.model_fields_set}
    changes = {k: v for k, v in changes.items() if v is not None}
    if "commission" in changes:
        changes["commission"] = {"type": body.commission.type, "value": body.commission.value}  # type: ignore[union-attr]
    campaign = await registry.campaigns.update(brand["id"], cid, changes)
    if campaign is None:
        raise NotFound(f"Campaign {cid!r} does not exist.")
    if "attribution_window_days" in changes:
        # Link records carry the window for the redirect and postbacks: rewrite them now.
        for row in await registry.list_links(brand["id"], campaign_id=cid, limit=100_000):
            await registry.campaigns.cache.write(
                registry.campaigns.cache.redis.set(keys.link(row["code"]), record(row, campaign).encode())
            )
    before, after = Campaign.model_validate(old), Campaign.model_validate(campaign)
    await registry.audit.record(brand["id"], auth.actor(request), "campaign.update", cid, before.dump(), after.dump())
    return http.JSONResponse(after.dump())


def routes() -> list[BaseRoute]:
    return [update_campaign]
