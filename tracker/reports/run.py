"""Running a report: execute the plan, assemble rows and totals with every metric.

The shapes of the answer (JSON models, CSV) and the metric formatting live in
``tracker.reports.answer``; the names below are re-exported for the routes and the portal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from tracker.core import money
from tracker.reports.answer import (
    BY_STATUS,
    KEY_FIELDS,
    METRICS,
    RATIO_PLACES,
    TOTAL_METRICS,
    Metrics,
    Report,
    ReportAnswer,
    ReportRow,
    Totals,
    finish,
    money_str,
    ratio,
    zero,
)
from tracker.reports.params import ReportParams
from tracker.reports.plan import plan
from tracker.reports.sql import CAMPAIGNS, CLICKS, INFLUENCERS, LINKS, Join, Query, Scope, Statement
from tracker.storage.clickhouse import ClickHouse

# Rounds of (find stale days, recompute them) before a report gives up on the cache.
_REFRESH_ROUNDS = 2


def fetch(ch: ClickHouse, query: Statement) -> list[dict[str, Any]]:
    if not isinstance(query, Query | Join):
        raise TypeError("Reports run Query objects only.")
    settings = query.settings
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


def refresh_dims(ch: ClickHouse, query: Query) -> None:
    """Write recomputed (link, UTC day, value) counts of one dimension into its cache table."""
    if not isinstance(query, Query) or query.table is not CLICKS:
        raise TypeError("The dimension cache is filled from a gated clicks Query only.")
    ch.command(
        "INSERT INTO report_dim_uniques (brand_id, dim, day, link_id, value, campaign_id, influencer_id, clicks, "
        f"bot_clicks, uniques, computed_at) {query.sql}",
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

    if p.dim_stale is not None and p.dim_refresh is not None:
        # The dimension cache: recompute the (link, day)s whose counts moved on, then read it.
        stale, refresh = p.dim_stale, p.dim_refresh
        for round_ in range(_REFRESH_ROUNDS + 1):
            days = [r["day"] for r in fetch(ch, bind(stale))]
            if not days:
                break
            if round_ == _REFRESH_ROUNDS:  # clicks keep arriving faster than the cache follows
                p = plan(scope, params, allow_cache=False)
                break
            refresh_dims(ch, refresh.with_params(f_days=days, **extra))

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
            acc[key] = zero()
        return acc[key]

    totals = zero()
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
            t["flagged_conversions"] += int(r["flagged_conversions"])
            t["revenue"] += revenue
            t["commission"] += commission
            for m in BY_STATUS:
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
        row.update(finish(acc[key], currency, fees_allocated=p.fees_allocated))
        rows.append(row)
    return Report(params, currency, p.source, rows, finish(totals, currency, fees_allocated=params.link_code is None))


__all__ = [
    "KEY_FIELDS", "METRICS", "RATIO_PLACES", "TOTAL_METRICS", "Metrics", "Report", "ReportAnswer", "ReportRow",
    "Totals", "fetch", "money_str", "ratio", "refresh_uniques", "run_report",
]


