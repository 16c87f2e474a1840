"""A report data set and the figures it must give, computed in Python from its events.

Two brands, clicks with bots and repeat visitors across UTC-day and DST boundaries,
conversions whose status moves over several versions (partial and full refunds, rejections),
unattributed orders, fees. ``expected()`` never touches ClickHouse; ``check()`` compares a
report with it metric by metric.
"""

from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS, CONVERSION_DEFAULTS
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
T0 = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)  # US DST ends 2026-11-01
SPAN_HOURS = 24 * 6
D_FROM, D_TO = date(2026, 10, 30), date(2026, 11, 2)


@dataclass
class Data:
    clicks: list[dict[str, Any]] = field(default_factory=list)
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
        "referer_host": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
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

    def order(brand: str, oid: str, link: tuple[int, str, str, str] | None, ts: datetime) -> None:
        amount = Decimal(rng.randrange(500, 20000)) / 100
        campaign = link[2] if link else ""
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
                    "attribution": "click" if link else "",
                    "click_id": "",
                    "link_id": link[0] if link else 0,
                    "link_code": link[1] if link else "",
                    "campaign_id": campaign,
                    "influencer_id": link[3] if link else "",
                    "coupon_code": "",
                    "occurred_at": ts,
                    "created_at": ts,
                    "updated_at": ts,
                    "customer_hash": "",
                    "email_hash": "",
                    "platform_state": "",
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


def load(ch: ClickHouse, data: Data) -> None:
    now = datetime(2026, 10, 1, tzinfo=UTC)
    for i in range(0, len(data.clicks), 250):  # several parts and rollup blocks
        batch = data.clicks[i : i + 250]
        ch.insert("clicks", [[c[k] for k in CLICK_COLUMNS] for c in batch], CLICK_COLUMNS)
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
    rows = [[BRAND["id"], i, c, cmp, inf, "https://shop.example/", "", 0, None, now, now, 1]
            for i, (c, cmp, inf) in LINKS.items()]
    rows.append([OTHER["id"], OTHER_LINK[0], OTHER_LINK[1], OTHER_LINK[2], OTHER_LINK[3],
                 "https://x.example/", "", 0, None, now, now, 1])
    ch.insert("links", rows, link_cols)



# --------------------------------------------------------------------------- the oracle

KEYS_OUT = {
    "influencer": ("influencer_id", "influencer_name"),
    "campaign": ("campaign_id", "campaign_name"),
    "link": ("link_code",),
    "day": ("day",),
    "hour": ("hour",),
    "country": ("country",),
    "device": ("device",),
}


def _q(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _ratio(a: Decimal, b: Decimal) -> Decimal | None:
    return None if b == 0 else _q(a / b)


def expected(
    data: Data,
    brand: str,
    group_by: tuple[str, ...],
    tz: str,
    d_from: date,
    d_to: date,
    campaign: str | None = None,
    influencer: str | None = None,
    link: str | None = None,
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    zi = ZoneInfo(tz)
    start = datetime.combine(d_from, time(0), zi)
    end = datetime.combine(d_to + timedelta(days=1), time(0), zi)

    def passes(c: str, i: str, code: str) -> bool:
        return (
            (campaign is None or c == campaign)
            and (influencer is None or i == influencer)
            and (link is None or code == link)
        )

    def key(ts: datetime | None, day: date | None, c: str, i: str, code: str, country: str, device: str) -> tuple:
        out: list[Any] = []
        local = ts.astimezone(zi) if ts is not None else None
        for k in group_by:
            if k == "influencer":
                out += [i, INFLUENCERS.get(i)]
            elif k == "campaign":
                out += [c, CAMPAIGNS.get(c)]
            elif k == "link":
                out.append(code)
            elif k == "day":
                out.append((local.date() if local else day).isoformat())  # type: ignore[union-attr]
            elif k == "hour":
                out.append(local.strftime("%Y-%m-%dT%H:00"))  # type: ignore[union-attr]
            elif k == "country":
                out.append(country)
            elif k == "device":
                out.append(device)
        return tuple(out)

    def blank() -> dict[str, Any]:
        return {"clicks": 0, "bot_clicks": 0, "u": set(), "conversions": 0,
                "revenue": Decimal(0), "commission": Decimal(0), "fees": Decimal(0),
                **{f"{s}_commission": Decimal(0) for s in ("pending", "payable", "paid")}}

    rows: dict[tuple, dict[str, Any]] = defaultdict(blank)
    tot = blank()
    tot["unattributed_conversions"] = 0
    tot["unattributed_revenue"] = Decimal(0)
    for ck in data.clicks:
        if ck["brand_id"] != brand or not start <= ck["ts"] < end:
            continue
        if not passes(ck["campaign_id"], ck["influencer_id"], ck["link_code"]):
            continue
        targets = [tot]
        if group_by:
            targets.append(rows[key(ck["ts"], None, ck["campaign_id"], ck["influencer_id"], ck["link_code"],
                                    ck["country"], ck["device"])])
        for t in targets:
            if ck["is_bot"]:
                t["bot_clicks"] += 1
            else:
                t["clicks"] += 1
                t["u"].add((ck["link_id"], ck["visitor_hash"], ck["ts"].astimezone(UTC).date()))
    conv_rows = bool(group_by) and not set(group_by) & {"country", "device"}
    for (b, _), history in data.orders.items():
        cur = history[-1]
        if b != brand or not start <= cur["occurred_at"] < end or cur["status"] not in ("approved", "pending"):
            continue
        if not passes(cur["campaign_id"], cur["influencer_id"], cur["link_code"]):
            continue
        net = cur["amount"] - cur["refunded_amount"]
        if not cur["attributed"]:
            tot["unattributed_conversions"] += 1
            tot["unattributed_revenue"] += net
            continue
        targets = [tot]
        if conv_rows:
            targets.append(rows[key(cur["occurred_at"], None, cur["campaign_id"], cur["influencer_id"],
                                    cur["link_code"], "", "")])
        for t in targets:
            t["conversions"] += 1
            t["revenue"] += net
            t["commission"] += cur["commission"]
            # Nothing is paid here; pending: the order pending or inside the 30-day hold.
            held = cur["status"] == "pending" or cur["occurred_at"] + timedelta(days=30) > datetime.now(UTC)
            t["pending_commission" if held else "payable_commission"] += cur["commission"]
    fee_rows = bool(group_by) and set(group_by) <= {"influencer", "campaign", "day"}
    if link is None:
        for (b, _), history in data.fees.items():
            cur = history[-1]
            if b != brand or not d_from <= cur["date"] <= d_to:
                continue
            if not passes(cur["campaign_id"], cur["influencer_id"], ""):
                continue
            targets = [tot]
            if fee_rows:
                targets.append(rows[key(None, cur["date"], cur["campaign_id"], cur["influencer_id"], "", "", "")])
            for t in targets:
                t["fees"] += cur["amount"]

    def finish(t: dict[str, Any]) -> dict[str, Any]:
        cost = t["commission"] + t["fees"]
        out = {
            "clicks": t["clicks"],
            "bot_clicks": t["bot_clicks"],
            "unique_clicks": len(t["u"]),
            "conversions": t["conversions"],
            "revenue": t["revenue"],
            "commission": t["commission"],
            **{f"{s}_commission": t[f"{s}_commission"] for s in ("pending", "payable", "paid")},
            "fees": t["fees"],
            "cost": cost,
            "roi": _ratio(t["revenue"] - cost, cost),
            "conversion_rate": _ratio(Decimal(t["conversions"]), Decimal(t["clicks"])),
            "epc": _ratio(t["commission"], Decimal(t["clicks"])),
            "aov": _ratio(t["revenue"], Decimal(t["conversions"])),
        }
        if "unattributed_conversions" in t:
            out["unattributed_conversions"] = t["unattributed_conversions"]
            out["unattributed_revenue"] = t["unattributed_revenue"]
        return out

    return {k: finish(v) for k, v in rows.items()}, finish(tot)


MONEY = ("revenue", "commission", "pending_commission", "payable_commission", "paid_commission", "fees", "cost",
         "unattributed_revenue")
RATIOS = ("roi", "conversion_rate", "epc", "aov")


def normalize(metrics: dict[str, Any]) -> dict[str, Any]:
    """API strings -> Decimal for comparison; checks the wire format on the way."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if name in MONEY:
            assert isinstance(value, str) and re.fullmatch(r"-?\d+\.\d{2,}", value), (name, value)
            out[name] = Decimal(value)
        elif name in RATIOS:
            assert value is None or (isinstance(value, str) and re.fullmatch(r"-?\d+\.\d{6}", value)), (name, value)
            out[name] = None if value is None else Decimal(value)
        elif name in reports.TOTAL_METRICS:
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
            out[name] = value
    return out


def check(report: reports.Report, data: Data, brand: str, params: ReportParams) -> None:
    exp_rows, exp_totals = expected(
        data, brand, params.group_by, params.tz, params.date_from, params.date_to,
        params.campaign_id, params.influencer_id, params.link_code,
    )
    assert normalize(report.totals) == exp_totals
    key_fields = [f for k in params.group_by for f in KEYS_OUT[k]]
    got = {tuple(r[f] for f in key_fields): normalize(r) for r in report.rows}
    assert set(got) == set(exp_rows)
    for k, metrics in exp_rows.items():
        assert got[k] == metrics, k
    for row in report.rows:
        assert set(row) == set(key_fields) | set(reports.METRICS)
    assert set(report.totals) == set(reports.TOTAL_METRICS)


def run(ch: ClickHouse, brand: dict[str, str], **kw: Any) -> reports.Report:
    params = ReportParams(**{"date_from": D_FROM, "date_to": D_TO, **kw})
    return reports.run_report(ch, brand, params, max_days=400)

