"""Quality flags, pure: which rules a brand's conversions trip, and the evidence.

- ``fast_click``: a click-attributed conversion less than ``min_click_seconds`` after its click.
- ``visitor_repeat``: every click-attributed conversion of a visitor (the click's keyed visitor
  hash) on a UTC day when that visitor has more than ``max_conversions_per_visitor_day``.
- ``self_referral``: the order's customer email is the influencer's own (both keyed hashes).
- ``coupon_leak``: a coupon-attributed conversion when, over the 7 days up to it, its link's
  coupon-only conversions exceed ``coupon_leak_factor`` times its click-attributed ones (at
  least one), or the order's country had no non-bot click on the link on its UTC day or the 7
  days before (``tracker.quality.leaks`` gives the same evidence per coupon).

Only attributed conversions are looked at (unattributed ones earn no commission). The inputs
are plain rows, so tests check the rules without ClickHouse.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracker.quality.rules import Rules

FAST_CLICK = "fast_click"
VISITOR_REPEAT = "visitor_repeat"
SELF_REFERRAL = "self_referral"
COUPON_LEAK = "coupon_leak"
FLAGS = (FAST_CLICK, VISITOR_REPEAT, SELF_REFERRAL, COUPON_LEAK)
LEAK_DAYS = 7


@dataclass(frozen=True, slots=True)
class Conv:
    """What the rules read of one attributed conversion (click facts empty when not click-attributed
    or its click is not copied yet)."""

    order_id: str
    conversion_id: str
    occurred_at: datetime
    attribution: str
    link_id: int
    influencer_id: str
    email_hash: str = ""
    country: str = ""
    click_ts: datetime | None = None
    visitor: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Conv:
        facts = row["attribution"] == "click" and bool(row.get("k_click"))
        return cls(
            str(row["order_id"]), str(row["conversion_id"]), row["occurred_at"], str(row["attribution"]),
            int(row["link_id"]), str(row["influencer_id"]), str(row.get("email_hash") or ""),
            str(row.get("country") or ""), row["k_ts"] if facts else None, int(row["k_visitor"]) if facts else 0,
        )


@dataclass
class Verdict:
    flags: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkWeek:
    """Coupon evidence of one link over a window (``tracker.quality.leaks``)."""

    coupon_orders: int
    click_orders: int
    foreign: bool

    def suspect(self, factor: Decimal) -> list[str]:
        reasons = []
        if self.coupon_orders > factor * max(self.click_orders, 1):
            reasons.append("factor")
        if self.foreign:
            reasons.append("country")
        return reasons


def evaluate(
    convs: Iterable[Conv],
    rules: Rules,
    influencer_emails: Mapping[str, str],
    click_countries: Mapping[tuple[int, date], frozenset[str]],
) -> dict[str, Verdict]:
    """order id -> verdict, for every conversion that trips a rule."""
    convs = list(convs)
    out: dict[str, Verdict] = defaultdict(Verdict)

    def flag(c: Conv, name: str, **evidence: Any) -> None:
        v = out[c.order_id]
        v.flags.append(name)
        v.evidence.update(evidence)

    by_visitor_day: dict[tuple[int, date], list[Conv]] = defaultdict(list)
    for c in convs:
        if c.click_ts is not None:
            seconds = (c.occurred_at - c.click_ts).total_seconds()
            if rules.min_click_seconds and seconds < rules.min_click_seconds:
                flag(c, FAST_CLICK, click_seconds=round(seconds, 3))
            if c.visitor:
                by_visitor_day[(c.visitor, c.occurred_at.date())].append(c)
        own = influencer_emails.get(c.influencer_id, "")
        if rules.self_referral and c.email_hash and own and c.email_hash == own:
            flag(c, SELF_REFERRAL)
    limit = rules.max_conversions_per_visitor_day
    if limit:
        for group in by_visitor_day.values():
            if len(group) > limit:
                for c in group:
                    flag(c, VISITOR_REPEAT, visitor_conversions_that_day=len(group))
    if rules.coupon_leak:
        for c, week in coupon_weeks(convs, click_countries):
            reasons = week.suspect(rules.factor)
            if reasons:
                flag(c, COUPON_LEAK, coupon_orders_7d=week.coupon_orders, click_orders_7d=week.click_orders,
                     leak_reasons=reasons)
    for v in out.values():
        v.flags = [f for f in FLAGS if f in v.flags]
    return dict(out)


def coupon_weeks(
    convs: list[Conv], click_countries: Mapping[tuple[int, date], frozenset[str]]
) -> Iterable[tuple[Conv, LinkWeek]]:
    """Each coupon-attributed conversion with its link's evidence over the 7 days up to it."""
    coupon_times: dict[int, list[datetime]] = defaultdict(list)
    click_times: dict[int, list[datetime]] = defaultdict(list)
    for c in convs:
        if c.attribution == "coupon":
            coupon_times[c.link_id].append(c.occurred_at)
        elif c.attribution == "click":
            click_times[c.link_id].append(c.occurred_at)
    for times in (*coupon_times.values(), *click_times.values()):
        times.sort()
    window = timedelta(days=LEAK_DAYS)
    for c in convs:
        if c.attribution != "coupon":
            continue
        lo, hi = c.occurred_at - window, c.occurred_at
        coupons, clicks = coupon_times[c.link_id], click_times.get(c.link_id, [])
        n_coupon = bisect_right(coupons, hi) - bisect_left(coupons, lo)
        n_click = bisect_right(clicks, hi) - bisect_left(clicks, lo)
        foreign = bool(c.country) and not any(
            c.country in click_countries.get((c.link_id, c.occurred_at.date() - timedelta(days=d)), ())
            for d in range(LEAK_DAYS + 1)
        )
        yield c, LinkWeek(n_coupon, n_click, foreign)
