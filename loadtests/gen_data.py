"""Bulk data for the report benchmark, generated inside ClickHouse (``INSERT ... SELECT FROM numbers()``).

Default shape (the DESIGN.md target): one brand, 10 million clicks (5% bots, visitors drawn
from a pool so they come back), 100,000 conversions (statuses, partial refunds, 10%
unattributed), 200 influencers, 20 campaigns, 1,000 links, fees, over the 90 days up to
``end``. Clicks go through the real ``clicks`` table, so the ``hourly`` and ``daily`` projections
are built exactly as ingest builds them. Generating 10M clicks takes ~20 s on 2 cores.

    python -m loadtests.gen_data --path /tmp/bench-ch [--clicks 10000000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse


@dataclass(frozen=True)
class Shape:
    brand_id: str = "brd_bench000000000001"
    currency: str = "USD"
    clicks: int = 10_000_000
    conversions: int = 100_000
    influencers: int = 200
    campaigns: int = 20
    links: int = 1_000
    days: int = 90
    end: date = date(2026, 11, 1)  # exclusive: data covers the `days` days before it

    @property
    def start(self) -> datetime:
        return datetime.combine(self.end - timedelta(days=self.days), datetime.min.time(), UTC)


# Link n (1..links) -> its campaign and influencer, the same formulas everywhere.
def _influencer(link: str) -> str:
    return f"concat('inf_bench', leftPad(toString(modulo(toUInt64({link}) - 1, {{n_inf:UInt32}})), 6, '0'))"


def _campaign(link: str) -> str:
    idx = f"modulo(intDiv(toUInt64({link}) - 1, {{n_inf:UInt32}}) * 7 + toUInt64({link}) * 3, {{n_cmp:UInt32}})"
    return f"concat('cmp_bench', leftPad(toString({idx}), 6, '0'))"


def _params(shape: Shape) -> dict[str, object]:
    return {
        "brand": shape.brand_id,
        "currency": shape.currency,
        "n_clicks": shape.clicks,
        "n_conv": shape.conversions,
        "n_inf": shape.influencers,
        "n_cmp": shape.campaigns,
        "n_links": shape.links,
        "t0_ms": int(shape.start.timestamp() * 1000),
        "span_ms": shape.days * 86_400_000,
        "day0": shape.start.date(),
        "days": shape.days,
    }


REGISTRY_SQL = [
    """
    INSERT INTO influencers (brand_id, id, name, handle, platform, created_at, version)
    SELECT {brand:String}, concat('inf_bench', leftPad(toString(number), 6, '0')),
           concat('Influencer ', toString(number)), concat('@inf', toString(number)), 'instagram',
           fromUnixTimestamp64Milli({t0_ms:Int64}, 'UTC'), 1
    FROM numbers({n_inf:UInt32})
    """,
    """
    INSERT INTO campaigns (brand_id, id, name, attribution_window_days, commission_type, commission_value,
                           click_id_param, allowed_domains, created_at, version)
    SELECT {brand:String}, concat('cmp_bench', leftPad(toString(number), 6, '0')),
           concat('Campaign ', toString(number)), 30, 'percent', toDecimal64(10, 4), 'click_id', [],
           fromUnixTimestamp64Milli({t0_ms:Int64}, 'UTC'), 1
    FROM numbers({n_cmp:UInt32})
    """,
    f"""
    INSERT INTO links (brand_id, id, code, campaign_id, influencer_id, destination_url, coupon_code,
                       disabled, expires_at, created_at, updated_at, version)
    SELECT {{brand:String}}, number + 1, concat('bl', toString(number + 1)), {_campaign("number + 1")},
           {_influencer("number + 1")}, 'https://shop.example/p', '', 0, NULL,
           fromUnixTimestamp64Milli({{t0_ms:Int64}}, 'UTC'), fromUnixTimestamp64Milli({{t0_ms:Int64}}, 'UTC'), 1
    FROM numbers({{n_links:UInt32}})
    """,
]

# Links are drawn with a skew (x^2): a few influencers get most of the traffic, as in life.
CLICKS_SQL = f"""
INSERT INTO clicks (click_id, ts, brand_id, campaign_id, influencer_id, link_id, link_code, visitor_hash,
                    country, device, browser, os, referer_host, utm_source, utm_medium, utm_campaign,
                    utm_term, utm_content, is_bot, bot_reason)
SELECT
    concat('bc', toString(number)) AS click_id,
    fromUnixTimestamp64Milli(toInt64({{t0_ms:Int64}} + (intDiv(number * {{span_ms:UInt64}}, {{n_clicks:UInt64}})
        + cityHash64(number, 9) % 60000) % {{span_ms:UInt64}}), 'UTC') AS ts,
    {{brand:String}} AS brand_id,
    {_campaign("link")} AS campaign_id,
    {_influencer("link")} AS influencer_id,
    link,
    concat('bl', toString(link)) AS link_code,
    cityHash64(cityHash64(number, 2) % 4000000) AS visitor_hash,
    ['US', 'US', 'US', 'GB', 'DE', 'FR', 'BR', 'IN', 'CA', ''][1 + cityHash64(number, 3) % 10] AS country,
    if(bot, 'bot', ['mobile', 'mobile', 'mobile', 'desktop', 'tablet'][1 + cityHash64(number, 5) % 5]) AS device,
    'Chrome' AS browser, 'Android' AS os,
    ['instagram.com', 'instagram.com', 't.co', 'youtube.com', ''][1 + cityHash64(number, 6) % 5] AS referer_host,
    ['ig', 'ig', 'yt', 'tt', ''][1 + cityHash64(number, 7) % 5] AS utm_source,
    ['social', 'social', 'video', ''][1 + cityHash64(number, 8) % 4] AS utm_medium,
    concat('drop', toString(cityHash64(number, 10) % 12)) AS utm_campaign, '', '',
    bot AS is_bot,
    if(bot, 'crawler', '') AS bot_reason
FROM
(
    SELECT number,
           toUInt64(1 + floor(pow((cityHash64(number, 1) % 1000000) / 1000000, 2) * {{n_links:UInt32}})) AS link,
           toUInt8(cityHash64(number, 4) % 100 < 5) AS bot
    FROM numbers({{n_clicks:UInt64}})
)
"""

# Conversions: 9 in 10 attributed, of those 1 in 10 by coupon; a click-attributed one names a
# click of the data set (its link and a time up to an hour after it), so reports can group
# conversions by the click's country, device, referer and UTM values.
_CLICK_LINK = "toUInt64(1 + floor(pow((cityHash64({n}, 1) % 1000000) / 1000000, 2) * {{n_links:UInt32}}))"
_CLICK_TS_MS = ("toInt64({{t0_ms:Int64}} + (intDiv({n} * {{span_ms:UInt64}}, {{n_clicks:UInt64}})"
                " + cityHash64({n}, 9) % 60000) % {{span_ms:UInt64}})")

CONVERSIONS_SQL = f"""
INSERT INTO conversions (brand_id, order_id, version, conversion_id, store_id, status, currency, amount,
                         refunded_amount, original_currency, original_amount, original_refunded_amount, fx_rate,
                         commission, attributed, attribution, click_id, link_id, link_code, campaign_id,
                         influencer_id, coupon_code, occurred_at, created_at, updated_at, customer_hash, country)
SELECT
    {{brand:String}}, concat('bo', toString(number)), 1, concat('cnv_bench', toString(number)),
    ['sto_bench1', 'sto_bench2'][1 + cityHash64(number, 19) % 2],
    status, {{currency:String}}, amount, refunded, {{currency:String}}, amount, refunded, toDecimal64(1, 8),
    if(attributed AND status IN ('approved', 'pending'),
       toDecimal64(round((amount - refunded) * toDecimal64(0.1, 4), 2), 4), toDecimal64(0, 4)) AS commission,
    attributed, if(attributed, if(by_coupon, 'coupon', 'click'), ''),
    if(attributed AND NOT by_coupon, concat('bc', toString(k)), ''), if(attributed, link, 0),
    if(attributed, concat('bl', toString(link)), ''),
    if(attributed, {_campaign("link")}, ''), if(attributed, {_influencer("link")}, ''),
    if(by_coupon, concat('BC', toString(link)), ''),
    ts, ts, ts, concat('cust', toString(cityHash64(number, 20) % 60000)),
    ['US', 'US', 'GB', 'DE', 'FR', 'BR', 'IN', ''][1 + cityHash64(number, 22) % 8]
FROM
(
    SELECT number, cityHash64(number, 17) % {{n_clicks:UInt64}} AS k,
           toUInt8(attributed AND cityHash64(number, 18) % 10 = 0) AS by_coupon,
           if(by_coupon,
              toUInt64(1 + floor(pow((cityHash64(number, 11) % 1000000) / 1000000, 2) * {{n_links:UInt32}})),
              {_CLICK_LINK.format(n="k")}) AS link,
           toUInt8(cityHash64(number, 12) % 10 != 0) AS attributed,
           ['approved', 'approved', 'approved', 'approved', 'approved', 'approved', 'approved',
            'pending', 'refunded', 'rejected'][1 + cityHash64(number, 13) % 10] AS status,
           toDecimal64(10 + (cityHash64(number, 14) % 29000) / 100, 4) AS amount,
           if(status = 'refunded', amount,
              if(status = 'approved' AND cityHash64(number, 15) % 10 = 0, toDecimal64(5, 4), toDecimal64(0, 4)))
              AS refunded,
           fromUnixTimestamp64Milli(if(by_coupon OR NOT attributed,
               toInt64({{t0_ms:Int64}} + cityHash64(number, 16) % {{span_ms:UInt64}}),
               least({_CLICK_TS_MS.format(n="k")} + toInt64(cityHash64(number, 16) % 3600000),
                     toInt64({{t0_ms:Int64}} + {{span_ms:UInt64}} - 1))), 'UTC') AS ts
    FROM numbers({{n_conv:UInt32}})
)
"""

FEES_SQL = f"""
INSERT INTO fees (brand_id, id, campaign_id, influencer_id, amount, currency, original_amount, original_currency,
                  fx_rate, date, note, created_at, version)
SELECT {{brand:String}}, concat('fee_bench', toString(number)), {_campaign("link")}, {_influencer("link")},
       toDecimal64(50 + number % 200, 4), {{currency:String}}, toDecimal64(50 + number % 200, 4),
       {{currency:String}}, toDecimal64(1, 8), addDays({{day0:Date}}, number % {{days:UInt32}}), '',
       fromUnixTimestamp64Milli({{t0_ms:Int64}}, 'UTC'), 1
FROM (SELECT number, 1 + (cityHash64(number, 21) % {{n_links:UInt32}}) AS link FROM numbers(2000))
"""


def generate(ch: ClickHouse, shape: Shape = Shape(), *, optimize: bool = True) -> dict[str, float]:
    """Insert the whole data set; returns seconds per step."""
    params = _params(shape)
    took: dict[str, float] = {}
    for name, sqls in (("registry", REGISTRY_SQL), ("conversions", [CONVERSIONS_SQL]), ("fees", [FEES_SQL])):
        t = time.perf_counter()
        for sql in sqls:
            ch.command(sql, params)
        took[name] = time.perf_counter() - t
    # The hourly and daily rollups are projections of `clicks` (migration 0023), built with
    # each insert block exactly as ingest builds them.
    t = time.perf_counter()
    # Generated click ids are unique: no in-block dedup sort needed on insert.
    ch.command(CLICKS_SQL, params, settings={"max_insert_threads": 2, "optimize_on_insert": 0})
    took["clicks"] = time.perf_counter() - t
    if optimize:
        # The steady state of a live server, where background merges have run.
        t = time.perf_counter()
        for table in ("clicks", "conversions", "fees", "influencers", "campaigns", "links"):
            ch.command(f"OPTIMIZE TABLE {table} FINAL")
        took["optimize"] = time.perf_counter() - t
    return took


def open_clickhouse(path: str, database: str = "bench") -> ClickHouse:
    settings = Settings(clickhouse_url=f"chdb://{path}", clickhouse_database=database)
    ch = ClickHouse.connect(settings)
    migrate.migrate(ch)
    return ch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="chDB directory (created)")
    parser.add_argument("--clicks", type=int, default=Shape.clicks)
    parser.add_argument("--conversions", type=int, default=Shape.conversions)
    parser.add_argument("--no-optimize", action="store_true")
    args = parser.parse_args()
    ch = open_clickhouse(args.path)
    took = generate(ch, Shape(clicks=args.clicks, conversions=args.conversions), optimize=not args.no_optimize)
    for name, seconds in took.items():
        print(f"{name:12s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
