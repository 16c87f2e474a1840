"""Why an order was attributed or not, in words, for the ledger's ``reason`` (pure, no I/O).

Names the click id and its age against the window, the coupon, the returning customer's
first order, and why a candidate lost (forged or garbled click id, another brand's link,
a disabled or deleted link, an expired click, a coupon of no link).
"""

from __future__ import annotations

from tracker.conversions.attribution import CLOCK_SKEW_MS, Attribution
from tracker.core.clickid import ClickRef
from tracker.core.records import LinkRecord
from tracker.core.timeutil import DAY_MS


def _days(ms: int) -> str:
    return f"{ms / DAY_MS:.1f} days"


def click_verdict(brand_id: str, occurred_ms: int, click_id: str | None, ref: ClickRef | None,
                  link: LinkRecord | None) -> str:
    """What the click id says (empty when none was sent)."""
    if not click_id:
        return ""
    shown = click_id if len(click_id) <= 40 else click_id[:40] + "…"
    if ref is None:
        return f"click id {shown!r} is not one this server issued (forged or garbled)"
    if link is None or link.id != ref.link_id:
        return f"click id {shown!r} names link #{ref.link_id}, which does not exist"
    if link.brand_id != brand_id:
        return f"click id {shown!r} belongs to a link of another brand"
    if link.disabled:
        return f"click id {shown!r} is on link {link.code}, which is disabled"
    age = occurred_ms - ref.ts_ms
    window = link.attribution_window_days
    if age < -CLOCK_SKEW_MS:
        return f"click id {shown!r} on link {link.code} is dated {_days(-age)} after the order"
    if age > window * DAY_MS:
        return (f"click id {shown!r} on link {link.code}: the click was {_days(age)} before the order, "
                f"beyond the {window}-day window (expired)")
    return (f"click id {shown!r} on link {link.code}: the click was {_days(max(age, 0))} before the order, "
            f"within the {window}-day window")


def explain(brand_id: str, occurred_ms: int, click_id: str | None, ref: ClickRef | None,
            click_link: LinkRecord | None, coupon_code: str | None, coupon_link: LinkRecord | None,
            result: Attribution) -> str:
    """One or two sentences: what won, and what lost and why."""
    click = click_verdict(brand_id, occurred_ms, click_id, ref, click_link)
    coupon = ""
    if coupon_code:
        if coupon_link is not None and coupon_link.brand_id == brand_id:
            coupon = f"coupon {coupon_code!r} of link {coupon_link.code}"
        else:
            coupon = f"coupon {coupon_code!r} belongs to no link of this brand"
    link = result.link
    if result.kind == "click":
        tail = f" Coupon {coupon_code!r} was not needed." if coupon_code else ""
        return f"Attributed by click: {click}.{tail}"
    lost = f" The {click}." if click else ""
    if result.kind == "customer" and link is not None:
        return (f"Attributed to a returning customer: the customer's first attributed order came through link "
                f"{link.code}, within the campaign's recurring months.{lost}")
    if result.kind == "coupon" and link is not None:
        return f"Attributed by {coupon}.{lost}"
    if not click and not coupon:
        return "Unattributed: the order carried no click id and no coupon."
    parts = [p for p in (click, coupon) if p]
    return "Unattributed: " + "; ".join(parts) + "."


def manual(link_code: str | None, note: str) -> str:
    """The reason of a re-attributed conversion."""
    target = f"to link {link_code}" if link_code else "to no influencer (unattributed)"
    return f"Attributed manually {target}: {note}" if note else f"Attributed manually {target}."
