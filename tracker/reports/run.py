"""Running a report: execute the plan, assemble rows and totals with every metric, JSON or CSV.

Metric definitions are DESIGN.md's. Money is an exact decimal string in the brand currency
(at least its minor digits), ratios decimal strings rounded half-up to ``RATIO_PLACES``, null on
a zero denominator. The answer models below are the shapes of the JSON answer.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema

from tracker.api.schema import Answer
from tracker.core import money
from tracker.reports.params import GroupKey, ReportParams
from tracker.reports.plan import plan
from tracker.reports.sql import CAMPAIGNS, CLICKS, INFLUENCERS, LINKS, Join, Query, Scope, Statement
from tracker.storage.clickhouse import ClickHouse

# Commission by lifecycle status (tracker.money.lifecycle), beside ``commission``.
_BY_STATUS = ("pending_commission", "payable_commission", "paid_commission")

# Ratios are decimal strings rounded half-up to this many places.
RATIO_PLACES = 6

MoneyText = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "Exact, in the brand currency."}
    ),
]
RatioText = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$"}, {"type": "null"}],
            "description": "Rounded half-up to 6 places; null on a zero denominator.",
        }
    ),
]
Count = Annotated[int, Field(ge=0)]


class Metrics(Answer):
    clicks: Count = Field(description="Non-bot clicks.")
    bot_clicks: Count
    unique_clicks: Count = Field(description="Distinct (link, visitor, UTC day) among non-bot clicks.")
    conversions: Count = Field(description="Attributed approved or pending conversions, by occurred_at.")
    revenue: MoneyText
    commission: MoneyText
    pending_commission: MoneyText = Field(description="Commission pending now: order pending or inside the hold.")
    payable_commission: MoneyText = Field(description="Commission payable now: approved, hold over, not paid.")
    paid_commission: MoneyText = Field(description="Commission in payouts marked paid.")
    fees: MoneyText
    cost: MoneyText
    roi: RatioText
    conversion_rate: RatioText
    epc: RatioText
    aov: RatioText


class GroupKeys(Answer):
    influencer_id: str | None = None
    influencer_name: str | None = None
    campaign_id: str | None = None
    campaign_name: str | None = None
    link_code: str | None = None
    day: str | None = Field(None, description="YYYY-MM-DD in the report's tz.")
    hour: str | None = Field(None, description="YYYY-MM-DDTHH:00 in the report's tz.")
    country: str | None = None
    device: str | None = None


class ReportRow(Metrics, GroupKeys):
    """One group: the keys of ``group_by`` (the others absent), then every metric."""

    # A key outside the row's grouping is left out of the answer, so the schema may not require it.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=False)


class Totals(Metrics):
    unattributed_conversions: Count
    unattributed_revenue: MoneyText


class ReportMeta(Answer):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True, validate_by_name=True)

    date_from: date = Field(alias="from")
    date_to: date = Field(alias="to")
    tz: str
    group_by: list[GroupKey]
    currency: str
    source: Literal["cached", "raw"] = Field(
        description="Where the click figures came from: `cached` (the daily rollup and the cache of exact "
        "daily unique counts) or `raw` (raw clicks)."
    )


class ReportAnswer(Answer):
    rows: list[ReportRow]
    totals: Totals
    meta: ReportMeta

    # A row carries the keys of its grouping only.
    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def dump_json(self) -> bytes:
        return self.model_dump_json(exclude_unset=True).encode()


METRICS: tuple[str, ...] = tuple(Metrics.model_fields)
TOTAL_METRICS: tuple[str, ...] = tuple(Totals.model_fields)

# Output fields of each group key, in row order.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "influencer": ("influencer_id", "influencer_name"),
    "campaign": ("campaign_id", "campaign_name"),
    "link": ("link_code",),
    "day": ("day",),
    "hour": ("hour",),
    "country": ("country",),
    "device": ("device",),
}


@dataclass
class Report:
    params: ReportParams
    currency: str
    source: str
    rows: list[dict[str, Any]]
    totals: dict[str, Any]

    def answer(self) -> ReportAnswer:
        meta = {
            "from": self.params.date_from,
            "to": self.params.date_to,
            "tz": self.params.tz,
            "group_by": list(self.params.group_by),
            "currency": self.currency,
            "source": self.source,
        }
        return ReportAnswer.model_validate({"rows": self.rows, "totals": self.totals, "meta": meta})

    def to_json(self) -> dict[str, Any]:
        return self.answer().dump()

    def json_bytes(self) -> bytes:
        """The JSON answer as sent (serialized by the answer model, not through a dict)."""
        return self.answer().dump_json()

    def columns(self) -> list[str]:
        keys = [f for k in self.params.group_by for f in KEY_FIELDS[k]]
        return ["type", *keys, *TOTAL_METRICS]

    def to_csv(self) -> str:
        """Rows (``type`` = row) then the totals (``type`` = total), same strings as the JSON."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        columns = self.columns()
        writer.writerow(columns)
        for row in self.rows:
            writer.writerow([_cell({"type": "row", **row}.get(c)) for c in columns])
        writer.writerow([_cell({"type": "total", **self.totals}.get(c)) for c in columns])
        return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # Spreadsheet formula injection: names are brand-supplied text.
    if text[:1] in ("=", "+", "-", "@") and not _NUMBER.match(text):
        return "'" + text
    return text


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

# Rounds of (find stale days, recompute them) before a report gives up on the cache.
_REFRESH_ROUNDS = 2


def fetch(ch: ClickHouse, query: Statement) -> list[dict[str, Any]]:
    if not isinstance(query, Query | Join):
        raise TypeError("Reports run Query objects only.")
    settings = query.settings if isinstance(query, Query) else {}
    return ch.query_dicts(query.sql, query.parameters, settings=dict(settings) if settings else None)


def refresh_uniques(ch: ClickHouse, query: Query) -> None:
    """Write recomputed (link, UTC day) unique counts into the cache table."""
    if not isinstance(query, Query) or query.table is not CLICKS:
        raise TypeError("The unique-clicks cache is filled from a gated clicks Query only.")
    ch.command(
        "INSERT INTO report_daily_uniques (brand_id, day, link_id, campaign_id, influencer_id, clicks, uniques, "
        f"computed_at) {query.sql}",
        query.parameters,
    )


def run_report(ch: ClickHouse, brand: Mapping[str, Any], params: ReportParams, max_days: int) -> Report:
    """Build the scope from the caller's brand, run the plan, assemble rows and totals."""
    scope = Scope.of(str(brand["id"]), params.date_from, params.date_to, params.tz, max_days)
    currency = str(brand.get("currency") or "USD")
    p = plan(scope, params)
    keys = params.group_by

    extra: dict[str, Any] = {}
    if p.link_ids is not None:
        extra["f_link_ids"] = [int(r["id"]) for r in fetch(ch, p.link_ids)]

    def bind(q: Statement) -> Statement:
        return q.with_params(**extra) if extra else q

    link_code_of: dict[int, str] = {}
    if p.source != "raw" and "link" in keys:
        link_code_of = {int(r["id"]): str(r["code"]) for r in fetch(ch, Query(scope, LINKS, ("id", "code")))}

    def key_of(row: Mapping[str, Any]) -> tuple[str, ...]:
        out: list[str] = []
        for k in keys:
            v = row[f"g_{k}"]
            # Cached click rows carry link ids; raw click rows, conversions and fees carry codes.
            if k == "link" and not isinstance(v, str):
                v = link_code_of.get(int(v), "")
            elif isinstance(v, date):
                v = v.isoformat()
            out.append(str(v))
        return tuple(out)

    def cached_rows(q: Join) -> list[dict[str, Any]] | None:
        """The join's rows once no (link, day) in it is stale; None if the cache cannot follow."""
        result = fetch(ch, bind(q))
        for _ in range(_REFRESH_ROUNDS):
            if not any(int(r["stale"]) for r in result):
                return result
            assert p.stale_days is not None and p.refresh is not None
            days = [r["day"] for r in fetch(ch, bind(p.stale_days))]
            if days:
                refresh_uniques(ch, p.refresh.with_params(f_days=days, **extra))
            result = fetch(ch, bind(q))
        return None if any(int(r["stale"]) for r in result) else result

    def click_query(statements: tuple[Statement, ...], rows: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for q in statements:
            if isinstance(q, Join):
                result = cached_rows(q)
                if result is None:
                    # Clicks kept arriving faster than the cache could follow: merge the sets directly.
                    fallback = plan(scope, params, allow_cache=False)
                    target = fallback.click_rows if rows else fallback.click_totals
                    assert target is not None
                    return [r for f in target for r in fetch(ch, bind(f))]
                out.extend(result)
            else:
                out.extend(fetch(ch, bind(q)))
        return out

    acc: dict[tuple[str, ...], dict[str, Any]] = {}

    def slot(key: tuple[str, ...]) -> dict[str, Any]:
        if key not in acc:
            acc[key] = _zero()
        return acc[key]

    totals = _zero()
    totals["unattributed_conversions"] = 0
    totals["unattributed_revenue"] = money.ZERO

    if p.click_rows is not None:
        for r in click_query(p.click_rows, rows=True):
            s = slot(key_of(r))
            for m in ("clicks", "bot_clicks", "unique_clicks"):
                s[m] += int(r[m])
                if p.click_totals is None:
                    totals[m] += int(r[m])
    if p.click_totals is not None:
        for r in click_query(p.click_totals, rows=False):
            for m in ("clicks", "bot_clicks", "unique_clicks"):
                totals[m] += int(r[m])

    for r in fetch(ch, p.conversions):
        revenue, commission = Decimal(r["revenue"]), Decimal(r["commission"])
        if not r["g_attributed"]:
            totals["unattributed_conversions"] += int(r["conversions"])
            totals["unattributed_revenue"] += revenue
            continue
        targets = [totals, slot(key_of(r))] if p.conversion_rows else [totals]
        for t in targets:
            t["conversions"] += int(r["conversions"])
            t["revenue"] += revenue
            t["commission"] += commission
            for m in _BY_STATUS:
                t[m] += Decimal(r[m])
    if p.fee_rows is not None:
        for r in fetch(ch, p.fee_rows):
            slot(key_of(r))["fees"] += Decimal(r["fees"])
            totals["fees"] += Decimal(r["fees"])
    if p.fee_totals is not None:
        for r in fetch(ch, p.fee_totals):
            totals["fees"] = Decimal(r["fees"])

    names: dict[str, dict[str, str]] = {}
    for k, table in (("influencer", INFLUENCERS), ("campaign", CAMPAIGNS)):
        if k in keys:
            names[k] = {str(r["id"]): str(r["name"]) for r in fetch(ch, Query(scope, table, ("id", "name")))}

    rows: list[dict[str, Any]] = []
    for key in sorted(acc):
        row: dict[str, Any] = {}
        for k, v in zip(keys, key, strict=True):
            if k in names:
                row[f"{k}_id"] = v
                row[f"{k}_name"] = names[k].get(v)
            else:
                row[KEY_FIELDS[k][0]] = v
        row.update(_finish(acc[key], currency))
        rows.append(row)
    return Report(params, currency, p.source, rows, _finish(totals, currency))


def _zero() -> dict[str, Any]:
    return {
        "clicks": 0,
        "bot_clicks": 0,
        "unique_clicks": 0,
        "conversions": 0,
        "revenue": money.ZERO,
        "commission": money.ZERO,
        **{m: money.ZERO for m in _BY_STATUS},
        "fees": money.ZERO,
    }


def _finish(m: dict[str, Any], currency: str) -> dict[str, Any]:
    """Derived metrics and output formatting (money as decimal strings, ratios null on 0)."""
    revenue: Decimal = m["revenue"]
    commission: Decimal = m["commission"]
    fees: Decimal = m["fees"]
    cost = commission + fees
    out: dict[str, Any] = {
        "clicks": m["clicks"],
        "bot_clicks": m["bot_clicks"],
        "unique_clicks": m["unique_clicks"],
        "conversions": m["conversions"],
        "revenue": money_str(revenue, currency),
        "commission": money_str(commission, currency),
        **{key: money_str(m[key], currency) for key in _BY_STATUS},
        "fees": money_str(fees, currency),
        "cost": money_str(cost, currency),
        "roi": ratio(revenue - cost, cost),
        "conversion_rate": ratio(Decimal(m["conversions"]), Decimal(m["clicks"])),
        "epc": ratio(commission, Decimal(m["clicks"])),
        "aov": ratio(revenue, Decimal(m["conversions"])),
    }
    if "unattributed_conversions" in m:
        out["unattributed_conversions"] = m["unattributed_conversions"]
        out["unattributed_revenue"] = money_str(m["unattributed_revenue"], currency)
    return out


def money_str(value: Decimal, currency: str) -> str:
    """Exact decimal string with at least the currency's minor digits ("49.90", "0.125")."""
    digits = money.MINOR_UNITS.get(currency, 2)
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    value = value.quantize(Decimal(1).scaleb(-digits)) if -exponent <= digits else value.normalize()
    return f"{value:f}"


def ratio(numerator: Decimal, denominator: Decimal) -> str | None:
    """numerator / denominator rounded half-up to RATIO_PLACES; None on a zero denominator."""
    if denominator == 0:
        return None
    value = (numerator / denominator).quantize(Decimal(1).scaleb(-RATIO_PLACES), rounding=ROUND_HALF_UP)
    return f"{value:f}"
