"""The coupon-leak detector: coupons whose coupon-only orders look leaked, with the evidence.

Over 7 UTC days (``to`` and the 6 days before), per link with a coupon: its coupon-only
conversions (count, countries, first and last order), its click-attributed conversions, and
the countries of its non-bot clicks. A coupon is a suspect when its coupon-only conversions
exceed the brand's factor times its click-attributed ones (at least one: ``factor``), or
some come from a country where the link had no clicks in those days (``country``). Every
conversion behind a suspect is also flagged ``coupon_leak`` (``tracker.quality.flags``, which
looks at the 7 days up to each conversion).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tracker.quality import flags
from tracker.quality.rules import Rules
from tracker.quality.sync import click_countries
from tracker.storage.clickhouse import ClickHouse

_ORDERS = (
    "SELECT link_id, any(link_code) AS link_code, any(upper(coupon_code)) AS coupon_code, "
    "any(influencer_id) AS influencer, any(campaign_id) AS campaign, attribution, country, count() AS n, "
    "min(occurred_at) AS first, max(occurred_at) AS last FROM conversions FINAL WHERE brand_id = {b:String} "
    "AND occurred_at >= {t0:DateTime64(3, 'UTC')} AND occurred_at < {t1:DateTime64(3, 'UTC')} "
    "AND attribution IN ('coupon', 'click') AND status != 'rejected' GROUP BY link_id, attribution, country"
)


def suspects(ch: ClickHouse, brand_id: str, rules: Rules, last: date) -> list[dict[str, Any]]:
    """The suspect coupons of the 7 UTC days ending ``last``, most coupon orders first."""
    first = last - timedelta(days=flags.LEAK_DAYS - 1)
    start = datetime.combine(first, time(0), UTC)
    end = datetime.combine(last + timedelta(days=1), time(0), UTC)
    rows = ch.query_dicts(
        _ORDERS,
        {"b": brand_id, "t0": start.strftime("%Y-%m-%d %H:%M:%S.000"), "t1": end.strftime("%Y-%m-%d %H:%M:%S.000")},
    )
    links: dict[int, dict[str, Any]] = {}
    for r in rows:
        link = links.setdefault(int(r["link_id"]), {"coupon": Counter(), "click": 0, "first": None, "last": None})
        if r["attribution"] == "click":
            link["click"] += int(r["n"])
            continue
        link.update(link_code=r["link_code"], coupon_code=r["coupon_code"], influencer_id=r["influencer"],
                    campaign_id=r["campaign"])
        link["coupon"][str(r["country"])] += int(r["n"])
        link["first"] = min(x for x in (link["first"], r["first"]) if x is not None)
        link["last"] = max(x for x in (link["last"], r["last"]) if x is not None)
    coupon_links = sorted(i for i, v in links.items() if v["coupon"])
    seen = click_countries(ch, brand_id, coupon_links, first, last)
    out: list[dict[str, Any]] = []
    for link_id in coupon_links:
        v = links[link_id]
        clicked = sorted(set().union(*(seen.get((link_id, first + timedelta(days=d)), ()) for d in range(7))))
        foreign = sorted(c for c in v["coupon"] if c and c not in clicked)
        week = flags.LinkWeek(sum(v["coupon"].values()), v["click"], bool(foreign))
        reasons = week.suspect(rules.factor)
        if not reasons:
            continue
        out.append({
            "coupon_code": v["coupon_code"],
            "link_code": v["link_code"],
            "influencer_id": v["influencer_id"],
            "campaign_id": v["campaign_id"],
            "coupon_conversions": week.coupon_orders,
            "click_conversions": week.click_orders,
            "countries": [{"country": c, "conversions": n} for c, n in sorted(v["coupon"].items())],
            "link_click_countries": [c for c in clicked if c],
            "foreign_countries": foreign,
            "first_order_at": v["first"],
            "last_order_at": v["last"],
            "reasons": reasons,
        })
    out.sort(key=lambda s: (-s["coupon_conversions"], s["coupon_code"]))
    return out
