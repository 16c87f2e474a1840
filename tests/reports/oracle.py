"""The figures a report must give, computed in plain Python over the data set's events.

``expected()`` never touches ClickHouse nor the reports' code: it walks the events of
``tests.reports.dataset`` with Decimal arithmetic and names each row's key fields itself, so a
slip in the production metric, rounding or key code shows up as a difference. ``check()``
compares a report with it, metric by metric.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tests.reports.dataset import CAMPAIGNS, INFLUENCERS, Data
from tracker.reports.answer import Report
from tracker.reports.params import ReportParams

CLICK_KEYS = {"influencer", "campaign", "link", "day", "hour", "country", "device", "utm_source", "utm_medium",
              "utm_campaign", "referer"}
FEE_KEYS = {"influencer", "campaign", "day"}


def _q(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def _ratio(a: Decimal, b: Decimal) -> Decimal | None:
    return None if b == 0 else _q(a / b)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# A row's key: the (answer field, value) pairs of its grouping, in any order.
Key = frozenset[tuple[str, Any]]
# Group key -> (answer field, value), for the keys a click carries (a conversion, through its click).
Fields = dict[str, tuple[str, Any]]


def _click_keys(ck: dict[str, Any] | None) -> Fields:
    def value(name: str) -> str:
        return ck[name] if ck else ""

    return {
        "utm_source": ("utm_source", value("utm_source")),
        "utm_medium": ("utm_medium", value("utm_medium")),
        "utm_campaign": ("utm_campaign", value("utm_campaign")),
        "referer": ("referer", value("referer_host")),
    }


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
) -> tuple[dict[Key, dict[str, Any]], dict[str, Any]]:
    zi = ZoneInfo(tz)
    start = datetime.combine(d_from, time(0), zi)
    end = datetime.combine(d_to + timedelta(days=1), time(0), zi)

    def passes(c: str, i: str, code: str) -> bool:
        return (
            (campaign is None or c == campaign)
            and (influencer is None or i == influencer)
            and (link is None or code == link)
        )

    def key(ts: datetime | None, day: date | None, c: str, i: str, code: str, country: str, device: str,
            more: Fields | None = None) -> Key:
        out: list[tuple[str, Any]] = []
        local = ts.astimezone(zi) if ts is not None else None
        for k in group_by:
            if more is not None and k in more:
                out.append(more[k])
            elif k == "influencer":
                out += [("influencer_id", i), ("influencer_name", INFLUENCERS.get(i))]
            elif k == "campaign":
                out += [("campaign_id", c), ("campaign_name", CAMPAIGNS.get(c))]
            elif k == "link":
                out.append(("link_code", code))
            elif k == "day":
                out.append(("day", (local.date() if local else day).isoformat()))  # type: ignore[union-attr]
            elif k == "hour":
                out.append(("hour", local.strftime("%Y-%m-%dT%H:00")))  # type: ignore[union-attr]
            elif k == "country":
                out.append(("country", country))
            elif k == "device":
                out.append(("device", device))
            else:
                raise AssertionError(f"no value of {k!r} here")
        return frozenset(out)

    def blank() -> dict[str, Any]:
        return {"clicks": 0, "bot_clicks": 0, "u": set(), "conversions": 0, "flagged": 0,
                "revenue": Decimal(0), "commission": Decimal(0), "fees": Decimal(0),
                **{f"{s}_commission": Decimal(0) for s in ("pending", "payable", "paid")}}

    rows: dict[Key, dict[str, Any]] = defaultdict(blank)
    tot = blank()
    tot["unattributed_conversions"] = 0
    tot["unattributed_revenue"] = Decimal(0)
    for ck in data.clicks:
        if ck["brand_id"] != brand or not start <= ck["ts"] < end:
            continue
        if not passes(ck["campaign_id"], ck["influencer_id"], ck["link_code"]):
            continue
        targets = [tot]
        if group_by and set(group_by) <= CLICK_KEYS:
            targets.append(rows[key(ck["ts"], None, ck["campaign_id"], ck["influencer_id"], ck["link_code"],
                                    ck["country"], ck["device"], _click_keys(ck))])
        for t in targets:
            if ck["is_bot"]:
                t["bot_clicks"] += 1
            else:
                t["clicks"] += 1
                t["u"].add((ck["link_id"], ck["visitor_hash"], ck["ts"].astimezone(UTC).date()))
    conv_rows = bool(group_by)
    click_by_id = {ck["click_id"]: ck for ck in data.clicks if ck["brand_id"] == brand}
    first_order: dict[str, tuple[datetime, str]] = {}
    for (b, oid), history in data.orders.items():
        h = history[-1]["customer_hash"]
        if b == brand and h:
            mine = (history[-1]["occurred_at"], oid)
            first_order[h] = min(first_order.get(h, mine), mine)
    for (b, oid), history in data.orders.items():
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
            click = click_by_id.get(cur["click_id"]) if cur["attribution"] == "click" else None
            h = cur["customer_hash"]
            more = {
                **_click_keys(click),
                "coupon": ("coupon", cur["coupon_code"].upper()),
                "attribution": ("attribution", cur["attribution"]),
                "store": ("store_id", cur["store_id"]),
                "status": ("status", cur["status"]),
                "customer": ("customer", "returning" if h and first_order[h][1] != oid else "new"),
            }
            targets.append(rows[key(cur["occurred_at"], None, cur["campaign_id"], cur["influencer_id"],
                                    cur["link_code"], click["country"] if click else cur["country"],
                                    click["device"] if click else "", more)])
        flagged = bool(data.flags.get((b, oid), [[]])[-1])
        for t in targets:
            t["flagged"] += flagged
            t["conversions"] += 1
            t["revenue"] += net
            t["commission"] += cur["commission"]
            # Nothing is paid here; pending: the order pending or inside the 30-day hold.
            held = cur["status"] == "pending" or cur["occurred_at"] + timedelta(days=30) > datetime.now(UTC)
            t["pending_commission" if held else "payable_commission"] += cur["commission"]
    fee_rows = bool(group_by) and set(group_by) <= FEE_KEYS
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
        allocated = link is None and ("unattributed_conversions" in t or set(group_by) <= FEE_KEYS)
        out = {
            "clicks": t["clicks"],
            "bot_clicks": t["bot_clicks"],
            "unique_clicks": len(t["u"]),
            "conversions": t["conversions"],
            "flagged_conversions": t["flagged"],
            "revenue": _cents(t["revenue"]),
            "commission": _cents(t["commission"]),
            **{f"{s}_commission": _cents(t[f"{s}_commission"]) for s in ("pending", "payable", "paid")},
            "fees": _cents(t["fees"]) if allocated else None,
            "cost": _cents(cost) if allocated else None,
            "roi": _ratio(t["revenue"] - cost, cost) if allocated else None,
            "conversion_rate": _ratio(Decimal(t["conversions"]), Decimal(t["clicks"])),
            "epc": None if not t["clicks"] else _cents(t["commission"] / t["clicks"]),
            "aov": None if not t["conversions"] else _cents(t["revenue"] / t["conversions"]),
        }
        if "unattributed_conversions" in t:
            out["unattributed_conversions"] = t["unattributed_conversions"]
            out["unattributed_revenue"] = _cents(t["unattributed_revenue"])
        return out

    return {k: finish(v) for k, v in rows.items()}, finish(tot)


COUNTS = ("clicks", "bot_clicks", "unique_clicks", "conversions", "flagged_conversions", "unattributed_conversions")
MONEY = ("revenue", "commission", "pending_commission", "payable_commission", "paid_commission",
         "unattributed_revenue")
MONEY_OR_NULL = ("fees", "cost", "epc", "aov")  # null: not allocated, or a zero denominator
RATIOS = ("roi", "conversion_rate")
METRICS = frozenset((*COUNTS, *MONEY, *MONEY_OR_NULL, *RATIOS))


def normalize(metrics: dict[str, Any]) -> dict[str, Any]:
    """API strings -> Decimal for comparison; checks the wire format on the way."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        if name in MONEY or (name in MONEY_OR_NULL and value is not None):
            # Rounded half-up to the cent: exactly two decimals (USD).
            assert isinstance(value, str) and re.fullmatch(r"-?\d+\.\d{2}", value), (name, value)
            out[name] = Decimal(value)
        elif name in MONEY_OR_NULL:
            out[name] = None
        elif name in RATIOS:
            assert value is None or (isinstance(value, str) and re.fullmatch(r"-?\d+\.\d{6}", value)), (name, value)
            out[name] = None if value is None else Decimal(value)
        elif name in COUNTS:
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
            out[name] = value
        else:
            raise AssertionError(f"{name!r} is no metric the oracle knows")
    return out


def check(report: Report, data: Data, brand: str, params: ReportParams) -> None:
    """The report's totals and rows are the expected ones: the same metrics, keys and figures."""
    exp_rows, exp_totals = expected(
        data, brand, params.group_by, params.tz, params.date_from, params.date_to,
        params.campaign_id, params.influencer_id, params.link_code,
    )
    assert set(report.totals) == set(exp_totals)
    assert normalize(report.totals) == exp_totals
    # A row's fields are its key fields, then the metrics: every field the oracle does not know as
    # a metric is part of the key, so a missing, extra or misnamed field makes the key differ.
    got: dict[Key, dict[str, Any]] = {}
    for row in report.rows:
        key: Key = frozenset((f, v) for f, v in row.items() if f not in METRICS)
        assert key not in got, f"two rows with the key {sorted(key)}"
        got[key] = normalize({f: v for f, v in row.items() if f in METRICS})
    assert set(got) == set(exp_rows)
    for k, metrics in exp_rows.items():
        assert got[k] == metrics, sorted(k)

