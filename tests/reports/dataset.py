"""The reports' data set: two brands' events, built from a seed, and written into ClickHouse.

Clicks with bots and repeat visitors across UTC-day and DST boundaries, UTM values and referers,
conversions whose status moves over several versions (partial and full refunds, rejections)
attributed by click (some clicks not ingested), coupon or returning customer, with stores,
customers, countries and quality flags (some cleared later), unattributed orders, fees.
``build_data`` is pure; ``load`` writes a data set the way ingest and the registry would.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tracker.core.clickid import ClickIds
from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS, CONVERSION_DEFAULTS
from tracker.quality import facts
from tracker.reports import run as reports
from tracker.reports.params import ReportParams
from tracker.storage.clickhouse import ClickHouse

BRAND = {"id": "brd_reportsTestBrand01", "name": "Acme", "currency": "USD"}
OTHER = {"id": "brd_reportsOtherBrand02", "name": "Rival", "currency": "USD"}
CAMPAIGNS = {"cmp_summer0001": "Summer", "cmp_winter0002": "Winter"}
INFLUENCERS = {"inf_alice00001": "Alice", "inf_bob0000002": "Bob", "inf_carol00003": "Carol"}
# link id -> (code, campaign, influencer)
LINKS = {
    101: ("aaaaaa", "cmp_summer0001", "inf_alice00001"),
    102: ("bbbbbb", "cmp_summer0001", "inf_bob0000002"),
    103: ("cccccc", "cmp_winter0002", "inf_alice00001"),
    104: ("dddddd", "cmp_winter0002", "inf_carol00003"),
}
OTHER_LINK = (201, "zzzzzz", "cmp_other00009", "inf_other00009")
COUNTRIES = ("US", "FR", "IN", "")
DEVICES = ("mobile", "desktop", "tablet")
UTM_SOURCES = ("ig", "yt", "")
REFERERS = ("instagram.com", "t.co", "")
STORES = ("sto_shopA", "sto_shopB")
T0 = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)  # US DST ends 2026-11-01
SPAN_HOURS = 24 * 6
D_FROM, D_TO = date(2026, 10, 30), date(2026, 11, 2)


@dataclass
class Data:
    clicks: list[dict[str, Any]] = field(default_factory=list)
    # (brand, order_id) -> flags versions, the last one is current
    flags: dict[tuple[str, str], list[list[str]]] = field(default_factory=dict)
    # order_id -> list of versions (dicts), the last one is current
    orders: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    fees: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


def make_click(rng: random.Random, n: int, brand: str, link: tuple[int, str, str, str], ts: datetime) -> dict[str, Any]:
    link_id, code, campaign, influencer = link
    bot = rng.random() < 0.15
    return {
        "click_id": f"c{n:06d}{uuid.uuid4().hex[:8]}",
        "ts": ts,
        "brand_id": brand,
        "campaign_id": campaign,
        "influencer_id": influencer,
        "link_id": link_id,
        "link_code": code,
        # A small pool: the same visitor comes back on the same link and day.
        "visitor_hash": rng.randrange(1, 25) * 0x9E3779B97F4A7C15 % 2**64,
        "country": rng.choice(COUNTRIES),
        "device": "bot" if bot else rng.choice(DEVICES),
        "browser": "Chrome",
        "os": "Android",
        "referer_host": rng.choice(REFERERS),
        "utm_source": rng.choice(UTM_SOURCES),
        "utm_medium": rng.choice(("social", "")),
        "utm_campaign": rng.choice(("spring", "fall", "")),
        "utm_term": "",
        "utm_content": "",
        "is_bot": 1 if bot else 0,
        "bot_reason": "crawler" if bot else "",
    }


def _commission(campaign: str, net: Decimal) -> Decimal:
    if campaign == "cmp_summer0001":
        return (net * Decimal("0.125")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return Decimal("4.00")


def build_data(seed: int = 7) -> Data:
    rng = random.Random(seed)
    data = Data()
    links = [(i, *v) for i, v in LINKS.items()]
    boundaries = [
        datetime(2026, 10, 30, 0, 0, tzinfo=UTC),
        datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(2026, 11, 2, 18, 29, 59, 999000, tzinfo=UTC),  # Kolkata midnight - 1 ms
        datetime(2026, 11, 2, 18, 30, tzinfo=UTC),  # Kolkata midnight
        datetime(2026, 11, 3, 4, 59, 59, 999000, tzinfo=UTC),  # New York (EST) midnight - 1 ms
        datetime(2026, 11, 3, 5, 0, tzinfo=UTC),
        datetime(2026, 10, 30, 4, 0, tzinfo=UTC),  # New York (EDT) midnight
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # the repeated 01:xx hour in New York
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    ]
    n = 0
    for ts in boundaries:
        for link in links:
            for _ in range(3):
                data.clicks.append(make_click(rng, n, BRAND["id"], link, ts))
                n += 1
    for _ in range(900):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        data.clicks.append(make_click(rng, n, BRAND["id"], rng.choice(links), ts))
        n += 1
    for _ in range(150):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        data.clicks.append(make_click(rng, n, OTHER["id"], OTHER_LINK, ts))
        n += 1

    clicks_of: dict[tuple[str, int], list[str]] = defaultdict(list)
    for ck in data.clicks:
        clicks_of[(ck["brand_id"], ck["link_id"])].append(ck["click_id"])

    def order(brand: str, oid: str, link: tuple[int, str, str, str] | None, ts: datetime) -> None:
        amount = Decimal(rng.randrange(500, 20000)) / 100
        campaign = link[2] if link else ""
        kind = rng.choice(("click", "click", "click", "coupon", "customer")) if link else ""
        click_id = ""
        if kind == "click":  # one in five clicks is not ingested yet
            click_id = rng.choice(clicks_of[(brand, link[0])]) if rng.random() < 0.8 else f"x{oid}"  # type: ignore[index]
        coupon = f"CODE{link[1]}" if link and (kind == "coupon" or rng.random() < 0.2) else ""
        extra = {
            "attribution": kind, "click_id": click_id, "coupon_code": coupon, "store_id": rng.choice(STORES),
            "customer_hash": rng.choice(["", "", *(f"h{n:02d}" for n in range(12))]),
            "country": rng.choice(("US", "DE", "")),
        }
        if rng.random() < 0.3:
            data.flags[(brand, oid)] = [["fast_click"], []] if rng.random() < 0.3 else [["coupon_leak"]]
        history: list[dict[str, Any]] = []
        status = rng.choice(["pending", "approved", "approved"])
        refunded = Decimal(0)

        def add(status: str, refunded: Decimal) -> None:
            counted = status in ("approved", "pending")
            commission = _commission(campaign, amount - refunded) if link and counted else Decimal(0)
            history.append(
                {
                    "brand_id": brand,
                    "order_id": oid,
                    "version": len(history) + 1,
                    "conversion_id": "cnv_" + oid,
                    "store_id": "sto_x",
                    "status": status,
                    "currency": "USD",
                    "amount": amount,
                    "refunded_amount": refunded,
                    "original_currency": "USD",
                    "original_amount": amount,
                    "original_refunded_amount": refunded,
                    "fx_rate": Decimal(1),
                    "commission": commission,
                    "attributed": 1 if link else 0,
                    "link_id": link[0] if link else 0,
                    "link_code": link[1] if link else "",
                    "campaign_id": campaign,
                    "influencer_id": link[3] if link else "",
                    "occurred_at": ts,
                    "created_at": ts,
                    "updated_at": ts,
                    "email_hash": "",
                    "platform_state": "",
                    **extra,
                }
            )

        add(status, refunded)
        for _ in range(rng.randrange(0, 3)):
            roll = rng.random()
            if status == "pending" and roll < 0.4:
                status = "approved"
            elif status == "pending" and roll < 0.55:
                status = "rejected"
            elif status == "approved" and roll < 0.5:
                refunded = min(amount, refunded + (Decimal(rng.randrange(100, 3000)) / 100))
                if refunded == amount:
                    status = "refunded"
            elif status == "approved" and roll < 0.7:
                status, refunded = "refunded", amount
            else:
                continue
            add(status, refunded)
        data.orders[(brand, oid)] = history

    for i in range(70):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        order(BRAND["id"], f"o{i:04d}", rng.choice(links), ts)
    for i in range(12):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        order(BRAND["id"], f"u{i:04d}", None, ts)
    for ts in boundaries:
        order(BRAND["id"], f"b{ts:%d%H%M%S%f}", rng.choice(links), ts)
    for i in range(10):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        order(OTHER["id"], f"o{i:04d}", OTHER_LINK, ts)

    def fee(brand: str, fid: str, campaign: str, influencer: str, day: date, amounts: list[str]) -> None:
        data.fees[(brand, fid)] = [
            {
                "brand_id": brand,
                "id": fid,
                "campaign_id": campaign,
                "influencer_id": influencer,
                "amount": Decimal(a),
                "currency": "USD",
                "original_amount": Decimal(a),
                "original_currency": "USD",
                "fx_rate": Decimal(1),
                "date": day,
                "note": "",
                "created_at": T0,
                "version": v + 1,
            }
            for v, a in enumerate(amounts)
        ]

    fee(BRAND["id"], "fee_1", "cmp_summer0001", "inf_alice00001", date(2026, 10, 30), ["100.00"])
    fee(BRAND["id"], "fee_2", "cmp_summer0001", "inf_bob0000002", date(2026, 11, 2), ["50.00", "75.50"])
    fee(BRAND["id"], "fee_3", "cmp_winter0002", "inf_alice00001", date(2026, 11, 1), ["20.25"])
    fee(BRAND["id"], "fee_4", "cmp_winter0002", "inf_carol00003", date(2026, 10, 29), ["999.00"])
    fee(BRAND["id"], "fee_5", "cmp_winter0002", "inf_carol00003", date(2026, 11, 3), ["888.00"])
    fee(OTHER["id"], "fee_6", OTHER_LINK[2], OTHER_LINK[3], date(2026, 11, 1), ["5000.00"])
    return data


def insert_clicks(ch: ClickHouse, clicks: list[dict[str, Any]], **kw: Any) -> None:
    ch.insert("clicks", [[c[k] for k in CLICK_COLUMNS] for c in clicks], CLICK_COLUMNS, **kw)


def add_clicks(ch: ClickHouse, data: Data, clicks: list[dict[str, Any]]) -> None:
    """More clicks after the load: into ClickHouse and into the data set the oracle reads."""
    insert_clicks(ch, clicks)
    data.clicks.extend(clicks)


def load(ch: ClickHouse, data: Data) -> None:
    now = datetime(2026, 10, 1, tzinfo=UTC)
    for i in range(0, len(data.clicks), 250):  # several parts and rollup blocks
        insert_clicks(ch, data.clicks[i : i + 250])
    depth = max(len(h) for h in data.orders.values())
    for v in range(depth):  # one insert per version: rows of an order sit in different parts
        rows = [h[v] for h in data.orders.values() if len(h) > v]
        ch.insert("conversions", [[r.get(k, CONVERSION_DEFAULTS.get(k)) for k in CONVERSION_COLUMNS] for r in rows],
                  CONVERSION_COLUMNS)
    fee_cols = list(next(iter(data.fees.values()))[0])
    for v in range(2):
        rows = [h[v] for h in data.fees.values() if len(h) > v]
        ch.insert("fees", [[r[k] for k in fee_cols] for r in rows], fee_cols)
    for brand in (BRAND, OTHER):
        for version, suffix in ((1, " (old)"), (2, "")):
            ch.insert(
                "influencers",
                [[brand["id"], i, n + suffix, "", "", now, version] for i, n in INFLUENCERS.items()],
                ["brand_id", "id", "name", "handle", "platform", "created_at", "version"],
            )
        ch.insert(
            "campaigns",
            [[brand["id"], c, n, 30, "percent", Decimal(10), "click_id", [], now, 1] for c, n in CAMPAIGNS.items()],
            [
                "brand_id", "id", "name", "attribution_window_days", "commission_type", "commission_value",
                "click_id_param", "allowed_domains", "created_at", "version",
            ],
        )
    link_cols = [
        "brand_id", "id", "code", "campaign_id", "influencer_id", "destination_url", "coupon_code",
        "disabled", "expires_at", "created_at", "updated_at", "version",
    ]
    link_rows = [[BRAND["id"], i, c, cmp, inf, "https://shop.example/", "", 0, None, now, now, 1]
                 for i, (c, cmp, inf) in LINKS.items()]
    link_rows.append([OTHER["id"], OTHER_LINK[0], OTHER_LINK[1], OTHER_LINK[2], OTHER_LINK[3],
                      "https://x.example/", "", 0, None, now, now, 1])
    ch.insert("links", link_rows, link_cols)
    for v in range(2):  # flags that cleared: a second, empty version
        flag_rows = [[b, o, "cnv_" + o, h[v], "{}", datetime(2026, 11, 5, v, tzinfo=UTC)]
                     for (b, o), h in data.flags.items() if len(h) > v]
        if flag_rows:
            ch.insert("conversion_flags", flag_rows,
                      ["brand_id", "order_id", "conversion_id", "flags", "evidence", "evaluated_at"])



def fill_facts(ch: ClickHouse) -> None:
    """What the report route does first: copy the clicks behind click-attributed conversions."""
    for brand in (BRAND, OTHER):
        assert facts.fill(ch, ClickIds("oracle-secret-key-0123456789abcdef"), brand["id"]).missing > 0  # not ingested


def run(ch: ClickHouse, brand: dict[str, str], **kw: Any) -> reports.Report:
    """A report over the data set's range (``D_FROM``..``D_TO``) unless ``kw`` names another."""
    params = ReportParams(**{"date_from": D_FROM, "date_to": D_TO, **kw})
    return reports.run_report(ch, brand, params, max_days=400)
