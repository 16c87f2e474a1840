"""Reports against figures computed here, in Python, from the events the test inserted.

One data set per module (its own chDB database): two brands, clicks with bots and repeat
visitors across UTC-day and DST boundaries, conversions whose status moves over several
versions (partial and full refunds, rejections), unattributed orders, fees. Each report is
compared metric by metric with ``expected()``, which never touches ClickHouse.
"""

from __future__ import annotations

import random
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tracker.core.errors import BadRequest, Unprocessable
from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS
from tracker.reports import run as reports
from tracker.reports.run import Query, ReportParams, Scope
from tracker.settings import Settings
from tracker.storage import migrate
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


def _click(rng: random.Random, n: int, brand: str, link: tuple[int, str, str, str], ts: datetime) -> dict[str, Any]:
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
                data.clicks.append(_click(rng, n, BRAND["id"], link, ts))
                n += 1
    for _ in range(900):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        data.clicks.append(_click(rng, n, BRAND["id"], rng.choice(links), ts))
        n += 1
    for _ in range(150):
        ts = T0 + timedelta(milliseconds=rng.randrange(SPAN_HOURS * 3600 * 1000))
        data.clicks.append(_click(rng, n, OTHER["id"], OTHER_LINK, ts))
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
        ch.insert("conversions", [[r[k] for k in CONVERSION_COLUMNS] for r in rows], CONVERSION_COLUMNS)
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


@pytest.fixture(scope="module")
def data() -> Data:
    return build_data()


@pytest.fixture(scope="module")
def loaded(chdb_dir: Path, data: Data) -> Iterator[ClickHouse]:
    settings = Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database="r_" + uuid.uuid4().hex[:12])
    client = ClickHouse.connect(settings)
    migrate.migrate(client)
    # Parts stay unmerged, so FINAL and the rollup's merge step do the work.
    for table in ("clicks", "conversions", "fees"):
        client.command(f"SYSTEM STOP MERGES {table}")
    load(client, data)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")


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
                "revenue": Decimal(0), "commission": Decimal(0), "fees": Decimal(0)}

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


MONEY = ("revenue", "commission", "fees", "cost", "unattributed_revenue")
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


# --------------------------------------------------------------------------- exactness

TZS = ("UTC", "America/New_York", "Asia/Kolkata", "Asia/Tokyo")
GROUPINGS = (
    (),
    ("influencer",),
    ("campaign",),
    ("link",),
    ("day",),
    ("hour",),
    ("country",),
    ("device",),
    ("influencer", "day"),
    ("campaign", "influencer"),
    ("link", "hour"),
    ("country", "device"),
    ("day", "device"),
)


@pytest.mark.parametrize("tz", TZS)
@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: ",".join(g) or "none")
def test_every_metric_matches_the_events(loaded: ClickHouse, data: Data, group_by: tuple[str, ...], tz: str) -> None:
    report = run(loaded, BRAND, group_by=group_by, tz=tz)
    check(report, data, BRAND["id"], report.params)
    if group_by:
        assert report.rows


@pytest.mark.parametrize(
    ("filters", "group_by", "tz"),
    [
        ({"campaign_id": "cmp_summer0001"}, ("influencer",), "UTC"),
        ({"campaign_id": "cmp_winter0002"}, ("day",), "Asia/Kolkata"),
        ({"influencer_id": "inf_alice00001"}, ("campaign", "day"), "America/New_York"),
        ({"link_code": "bbbbbb"}, ("day",), "UTC"),
        ({"link_code": "cccccc"}, ("influencer",), "Asia/Kolkata"),
        ({"link_code": "nosuch"}, ("day",), "UTC"),
        ({"campaign_id": "cmp_summer0001", "influencer_id": "inf_bob0000002"}, ("hour",), "Asia/Tokyo"),
        ({"campaign_id": "cmp_nosuch0009"}, (), "UTC"),
    ],
)
def test_filters(loaded: ClickHouse, data: Data, filters: dict[str, str], group_by: tuple[str, ...], tz: str) -> None:
    report = run(loaded, BRAND, group_by=group_by, tz=tz, **filters)
    check(report, data, BRAND["id"], report.params)


@pytest.mark.parametrize(
    ("d_from", "d_to"),
    [
        (date(2026, 11, 1), date(2026, 11, 1)),
        (date(2026, 10, 1), date(2026, 10, 28)),  # nothing there
        (date(2026, 10, 25), date(2026, 11, 10)),
    ],
)
@pytest.mark.parametrize("group_by", [("influencer", "day"), ("influencer",), ("link",), ()], ids=str)
@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo", "UTC"])
def test_ranges(
    loaded: ClickHouse, data: Data, d_from: date, d_to: date, group_by: tuple[str, ...], tz: str
) -> None:
    report = run(loaded, BRAND, group_by=group_by, date_from=d_from, date_to=d_to, tz=tz)
    check(report, data, BRAND["id"], report.params)


def test_the_other_brand_sees_only_its_own(loaded: ClickHouse, data: Data) -> None:
    report = run(loaded, OTHER, group_by=("link",))
    check(report, data, OTHER["id"], report.params)
    assert [r["link_code"] for r in report.rows] == ["zzzzzz"]


def test_rows_carry_names_and_current_versions(loaded: ClickHouse) -> None:
    report = run(loaded, BRAND, group_by=("influencer", "campaign"))
    names = {(r["influencer_name"], r["campaign_name"]) for r in report.rows}
    assert ("Alice", "Summer") in names
    assert all("(old)" not in n for n, _ in names)


@pytest.mark.parametrize(
    ("tz", "group_by", "source"),
    [
        ("UTC", ("influencer",), "cached"),
        ("UTC", ("day", "link"), "cached"),
        ("UTC", (), "cached"),
        ("Europe/London", ("campaign", "day"), "cached"),  # GMT in November
        ("UTC", ("hour",), "raw"),
        ("America/New_York", ("day",), "raw"),
        ("America/New_York", ("influencer",), "cached"),  # full UTC days cached, edge days merged
        ("Asia/Tokyo", ("campaign", "link"), "cached"),
        ("Asia/Tokyo", ("hour", "link"), "raw"),
        ("Asia/Kolkata", ("influencer",), "raw"),
        ("Australia/Lord_Howe", ("day",), "raw"),  # +11:00 in its summer
        ("UTC", ("country",), "raw"),
        ("UTC", ("device", "day"), "raw"),
    ],
)
def test_source_choice(loaded: ClickHouse, tz: str, group_by: tuple[str, ...], source: str) -> None:
    assert run(loaded, BRAND, group_by=group_by, tz=tz).source == source


@pytest.mark.parametrize(
    ("tz", "d_from", "d_to", "whole"),
    [
        ("UTC", date(2026, 1, 1), date(2026, 12, 31), True),
        ("Europe/Paris", date(2026, 3, 1), date(2026, 11, 30), True),
        ("Asia/Kolkata", date(2026, 11, 1), date(2026, 11, 1), False),
        ("Asia/Kathmandu", date(2026, 11, 1), date(2026, 11, 1), False),
        ("Australia/Lord_Howe", date(2026, 11, 1), date(2026, 11, 30), True),  # +11:00
        ("Australia/Lord_Howe", date(2026, 6, 1), date(2026, 6, 30), False),  # +10:30
        ("Australia/Lord_Howe", date(2026, 3, 1), date(2026, 4, 30), False),  # both
    ],
)
def test_whole_hour_offsets(tz: str, d_from: date, d_to: date, whole: bool) -> None:
    assert Scope.of("brd_x", d_from, d_to, tz, 400).whole_hours() is whole


def test_the_cache_follows_new_clicks(ch: ClickHouse) -> None:
    """Cached daily uniques are checked against the daily rollup's click count on every read."""
    data = build_data(seed=11)
    load(ch, data)
    params = ReportParams(D_FROM, D_TO, ("influencer", "day"), "UTC")
    first = reports.run_report(ch, BRAND, params, 400)
    assert first.source == "cached"
    check(first, data, BRAND["id"], params)
    cached = ch.query("SELECT count() FROM report_daily_uniques")[0][0]
    assert cached > 0
    # More clicks on days already cached, from visitors already seen and new ones.
    rng = random.Random(5)
    more = [
        _click(rng, 900_000 + i, BRAND["id"], (101, *LINKS[101]), datetime(2026, 10, 31, 12, i, tzinfo=UTC))
        for i in range(40)
    ]
    ch.insert("clicks", [[c[k] for k in CLICK_COLUMNS] for c in more], CLICK_COLUMNS)
    data.clicks.extend(more)
    second = reports.run_report(ch, BRAND, params, 400)
    check(second, data, BRAND["id"], params)
    assert second.rows != first.rows
    # A cache row whose count does not match is never believed.
    ch.command(
        "INSERT INTO report_daily_uniques SELECT brand_id, day, link_id, campaign_id, influencer_id, "
        "clicks + 1, 999999, now64(6) FROM report_daily_uniques FINAL"
    )
    check(reports.run_report(ch, BRAND, params, 400), data, BRAND["id"], params)


def test_without_cache_rounds_the_visitor_sets_answer(ch: ClickHouse, monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_data(seed=13)
    load(ch, data)
    monkeypatch.setattr(reports, "_REFRESH_ROUNDS", 0)
    for group_by, tz in [((), "UTC"), (("link",), "UTC"), (("campaign", "day"), "UTC"),
                         (("influencer",), "America/New_York"), ((), "Asia/Tokyo")]:
        params = ReportParams(D_FROM, D_TO, group_by, tz)
        assert reports.plan(Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400), params).source == "cached"
        check(reports.run_report(ch, BRAND, params, 400), data, BRAND["id"], params)
    assert ch.query("SELECT count() FROM report_daily_uniques")[0][0] == 0


def test_money_and_ratio_formats() -> None:
    assert reports.money_str(Decimal("49.9000"), "USD") == "49.90"
    assert reports.money_str(Decimal("12.3450"), "USD") == "12.345"
    assert reports.money_str(Decimal("0E-4"), "USD") == "0.00"
    assert reports.money_str(Decimal("100"), "JPY") == "100"
    assert reports.money_str(Decimal("1500.0000"), "KWD") == "1500.000"
    assert reports.ratio(Decimal(1), Decimal(3)) == "0.333333"
    assert reports.ratio(Decimal(2), Decimal(3)) == "0.666667"
    assert reports.ratio(Decimal(-1), Decimal(8)) == "-0.125000"
    assert reports.ratio(Decimal(1), Decimal(0)) is None


def test_csv_matches_json(loaded: ClickHouse) -> None:
    import csv
    import io

    report = run(loaded, BRAND, group_by=("influencer", "day"), tz="Asia/Kolkata")
    lines = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(lines) == len(report.rows) + 1
    for line, row in zip(lines, report.rows, strict=False):
        assert line["type"] == "row"
        assert {k: v for k, v in line.items() if k in row} == {k: "" if v is None else str(v) for k, v in row.items()}
    assert lines[-1]["type"] == "total"
    assert {k: lines[-1][k] for k in report.totals} == {
        k: "" if v is None else str(v) for k, v in report.totals.items()
    }


# --------------------------------------------------------------------------- the gate


@pytest.mark.parametrize("brand_id", ["", None, 7])
def test_no_scope_without_a_brand(brand_id: Any) -> None:
    with pytest.raises(ValueError, match="brand"):
        Scope(brand_id, D_FROM, D_TO, "UTC", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, datetime(2026, 1, 2, tzinfo=UTC)),
        (datetime(2026, 1, 1, tzinfo=UTC), None),
        (datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
        (datetime(2026, 1, 1), datetime(2026, 1, 2)),  # naive: no time zone
    ],
)
def test_no_scope_without_a_range(start: Any, end: Any) -> None:
    with pytest.raises(ValueError):
        Scope("brd_x", D_FROM, D_TO, "UTC", start, end)


@pytest.mark.parametrize("scope", [None, {"brand_id": "brd_x"}, "brd_x"])
def test_no_query_without_a_scope(scope: Any) -> None:
    with pytest.raises(TypeError):
        Query(scope, reports.CLICKS, ("count()",))
    with pytest.raises(TypeError):
        reports.gate(scope, reports.CLICKS)


def test_a_query_cannot_override_the_scope_parameters() -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, "UTC", 400)
    with pytest.raises(ValueError, match="override"):
        Query(scope, reports.CLICKS, ("count()",), params={"brand": "brd_other"})


def test_only_the_gate_names_a_table() -> None:
    """The module has exactly one place that writes ``FROM <table>``: the gate."""
    source = Path(reports.__file__).read_text()
    assert len(re.findall(r"FROM \{table", source)) == 1
    assert re.findall(r"FROM [a-z_]", source) == []


ALL_GROUPINGS = [(), *[(k,) for k in reports.GROUP_KEYS], ("influencer", "day"), ("link", "country", "hour")]


@pytest.mark.parametrize("allow_cache", [True, False])
@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize("group_by", ALL_GROUPINGS, ids=lambda g: ",".join(g) or "none")
@pytest.mark.parametrize(
    "filters", [{}, {"campaign_id": "cmp_a"}, {"link_code": "abc123", "influencer_id": "inf_b"}], ids=str
)
def test_every_planned_query_is_gated(
    group_by: tuple[str, ...], tz: str, filters: dict[str, str], allow_cache: bool
) -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, tz, 400)
    plan = reports.plan(scope, ReportParams(D_FROM, D_TO, group_by, tz, **filters), allow_cache=allow_cache)
    statements = [q for q in vars(plan).values() if isinstance(q, Query | reports.Join)]
    for part in (plan.click_rows, plan.click_totals):
        statements += list(part or ())
    assert plan.conversions in statements
    assert plan.click_rows or plan.click_totals
    for q in statements:
        sql = q.sql
        tables = re.findall(r"FROM (\w+)", sql)
        assert tables
        for name in set(tables):
            table = next(t for t in reports.TABLES if t.name == name)
            gate = reports.gate(scope, table)
            assert gate.startswith(f"FROM {name}") and "WHERE brand_id = {brand:String}" in gate
            if table.time_column is not None:
                col = table.time_column
                brand_then_start = rf"WHERE brand_id = \{{brand:String\}} AND {col} >= \{{(start|start_s|date_from):"
                assert re.search(brand_then_start, gate)
                assert re.search(rf"AND {col} <=? \{{(end|end_s|date_to):", gate)
            # Every mention of the table is the whole gate: brand first, then the range.
            assert sql.count(f"FROM {name} ") == sql.count(gate)
        # Request values appear only as parameters.
        for value in filters.values():
            assert value not in sql
        assert q.parameters["brand"] == "brd_x"
        assert q.parameters["start"] == reports._ts(scope.start)


def test_a_join_needs_one_scope() -> None:
    a = Scope.of("brd_a", D_FROM, D_TO, "UTC", 400)
    b = Scope.of("brd_b", D_FROM, D_TO, "UTC", 400)
    with pytest.raises(ValueError, match="same scope"):
        reports.Join(Query(a, reports.CLICKS, ("1",)), Query(b, reports.CLICKS, ("1",)), ("x",), ("1",))
    with pytest.raises(TypeError):
        reports.Join("SELECT 1", Query(b, reports.CLICKS, ("1",)), ("x",), ("1",))  # type: ignore[arg-type]


def test_the_cache_is_filled_from_a_gated_clicks_query_only(loaded: ClickHouse) -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, "UTC", 400)
    with pytest.raises(TypeError):
        reports.refresh_uniques(loaded, Query(scope, reports.CLICKS_DAILY, ("1",)))
    with pytest.raises(TypeError):
        reports.refresh_uniques(loaded, "SELECT 1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- request parsing


def test_parse_params_reads_everything() -> None:
    p = reports.parse_params(
        {
            "from": "2026-11-01",
            "to": "2026-11-30",
            "group_by": "influencer, day,influencer",
            "tz": "Europe/Paris",
            "campaign_id": "cmp_a1",
            "influencer_id": "inf_b2",
            "link": "abc123",
            "format": "CSV",
        }
    )
    assert p == ReportParams(
        date(2026, 11, 1), date(2026, 11, 30), ("influencer", "day"), "Europe/Paris",
        "cmp_a1", "inf_b2", "abc123", "csv",
    )


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        ({"to": "2026-11-01"}, "bad_date", "'from'"),
        ({"from": "2026-11-01"}, "bad_date", "'to'"),
        ({"from": "2026-13-01", "to": "2026-11-01"}, "bad_date", "2026-13-01"),
        ({"from": "yesterday", "to": "2026-11-01"}, "bad_date", "yesterday"),
        ({"from": "2026-11-01T00:00", "to": "2026-11-01"}, "bad_date", "2026-11-01T00:00"),
        ({"from": "20261101", "to": "2026-11-01"}, "bad_date", "20261101"),
        ({"from": "1969-12-31", "to": "2026-11-01"}, "bad_date", "1969-12-31"),
        ({"from": "2026-11-01", "to": "2026-11-02", "group_by": "week"}, "bad_group_by", "week"),
        ({"from": "2026-11-01", "to": "2026-11-02", "group_by": "day;drop"}, "bad_group_by", "day;drop"),
        ({"from": "2026-11-01", "to": "2026-11-02", "tz": "Mars/Olympus"}, "bad_timezone", "Mars/Olympus"),
        ({"from": "2026-11-01", "to": "2026-11-02", "tz": "../../etc/passwd"}, "bad_timezone", "passwd"),
        ({"from": "2026-11-01", "to": "2026-11-02", "format": "xml"}, "bad_format", "xml"),
        ({"from": "2026-11-01", "to": "2026-11-02", "campaign_id": "x' OR 1=1"}, "bad_filter", "OR 1=1"),
        ({"from": "2026-11-01", "to": "2026-11-02", "groupby": "day"}, "unknown_parameter", "groupby"),
    ],
)
def test_parse_params_rejects(query: dict[str, str], code: str, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        reports.parse_params(query)
    assert info.value.code == code
    assert needle in info.value.message


def test_scope_rejects_backwards_and_long_ranges() -> None:
    with pytest.raises(BadRequest, match="before"):
        Scope.of("brd_x", date(2026, 11, 2), date(2026, 11, 1), "UTC", 400)
    with pytest.raises(Unprocessable, match="31 days; the limit is 30"):
        Scope.of("brd_x", date(2026, 11, 1), date(2026, 12, 1), "UTC", 30)
    assert Scope.of("brd_x", date(2026, 11, 1), date(2026, 11, 30), "UTC", 30).end == datetime(
        2026, 12, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("tz", "d_from", "start", "end"),
    [
        ("UTC", date(2026, 11, 1), datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)),
        ("America/New_York", date(2026, 11, 1), datetime(2026, 11, 1, 4, tzinfo=UTC),
         datetime(2026, 11, 2, 5, tzinfo=UTC)),  # 25-hour day
        ("Asia/Kolkata", date(2026, 11, 1), datetime(2026, 10, 31, 18, 30, tzinfo=UTC),
         datetime(2026, 11, 1, 18, 30, tzinfo=UTC)),
    ],
)
def test_scope_range_in_time_zone(tz: str, d_from: date, start: datetime, end: datetime) -> None:
    scope = Scope.of("brd_x", d_from, d_from, tz, 400)
    assert (scope.start, scope.end) == (start, end)


def test_a_retried_ingest_block_counts_once_in_the_daily_rollup(ch: ClickHouse) -> None:
    rng = random.Random(3)
    block = [_click(rng, i, BRAND["id"], (101, *LINKS[101]), T0 + timedelta(minutes=i)) for i in range(50)]
    for _ in range(2):
        ch.insert("clicks", [[c[k] for k in CLICK_COLUMNS] for c in block], CLICK_COLUMNS, dedup_token="batch-1")
    daily = ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0]
    raw = ch.query("SELECT count() FROM clicks")[0][0]
    assert daily == raw == 50


@pytest.mark.parametrize(
    ("tz", "group_by", "rows_source"),
    [("UTC", ("country",), "raw"), ("America/New_York", ("day",), "raw"), ("Asia/Tokyo", ("hour",), "raw")],
)
def test_totals_use_the_cache_when_the_rows_cannot(tz: str, group_by: tuple[str, ...], rows_source: str) -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, tz, 400)
    plan = reports.plan(scope, ReportParams(D_FROM, D_TO, group_by, tz))
    assert plan.source == rows_source
    assert plan.click_totals is not None
    assert any(isinstance(q, reports.Join) for q in plan.click_totals)
    assert plan.stale_days is not None and plan.refresh is not None
