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
from tracker.reports.sql import CAMPAIGNS, CLICKS, INFLUENCERS, LINKS, CacheRead, Join, Query, Scope, Statement
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


_CLICK_METRICS = ("clicks", "bot_clicks", "unique_clicks")


def _per_day(rows: list[dict[str, Any]], cols: tuple[str, str]) -> dict[date, tuple[int, int]]:
    """Sums per UTC day: the ``u_day`` rows of a grouping set, or rows keyed by the UTC day itself."""
    out: dict[date, tuple[int, int]] = {}
    for r in rows:
        d = r["u_day"] if "u_day" in r else r["g_day"]
        if d is not None:
            x, y = out.get(d, (0, 0))
            out[d] = (x + int(r[cols[0]]), y + int(r[cols[1]]))
    return out


def _key_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the report's keys (not the per-day grouping set)."""
    return [r for r in rows if r.get("u_day", r) is None or "u_day" not in r]


def _within(d: date, days: tuple[date, date] | None) -> bool:
    return days is not None and days[0] <= d <= days[1]


def read_cache(
    ch: ClickHouse, read: CacheRead, refresh: Query | None, dim_refresh: Query | None, keys: tuple[str, ...],
    bound: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, int]] | None:
    """Cached click rows (keyed ``g_<key>``) and totals, read once every UTC day they cover adds
    up (``CacheRead``); stale days are recomputed first. None when clicks keep arriving faster
    than the caches follow."""
    def bind(q: Query) -> Query:
        return q.with_params(**bound) if bound else q

    for round_ in range(_REFRESH_ROUNDS + 1):
        clicks = fetch(ch, bind(read.clicks))
        uniques = fetch(ch, bind(read.uniques))
        dims = fetch(ch, bind(read.dims)) if read.dims is not None else []
        c_day, u_day = _per_day(clicks, ("c", "b")), _per_day(uniques, ("cc", "u"))
        # Counts only grow, and a cached (link, day) is a count of it taken earlier: a day's
        # sums are equal exactly when every (link, day) of it is.
        days = sorted(set(c_day) | set(u_day))
        stale = [d for d in days if _within(d, read.full) and c_day.get(d, (0, 0))[0] != u_day.get(d, (0, 0))[0]]
        dim_stale: list[date] = []
        if read.dims is not None:
            v_day = _per_day(dims, ("vc", "vb"))
            dim_stale = [d for d in sorted(set(c_day) | set(v_day))
                         if _within(d, read.dim_days) and c_day.get(d, (0, 0)) != v_day.get(d, (0, 0))]
        if not stale and not dim_stale:
            break
        if round_ == _REFRESH_ROUNDS:
            return None
        if stale and refresh is not None:
            refresh_uniques(ch, refresh.with_params(f_days=stale, **bound))
        if dim_stale and dim_refresh is not None:
            refresh_dims(ch, dim_refresh.with_params(f_days=dim_stale, **bound))

    rows: list[dict[str, Any]] = []
    names = tuple(f"g_{k}" for k in keys)
    if read.rows == "daily":
        # The rows' dicts are the fetched ones, given the metric names (6,000 rows for influencer x day).
        by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in _key_rows(clicks):
            r["clicks"], r["bot_clicks"], r["unique_clicks"] = r["c"], r["b"], 0
            by_key[tuple([r[n] for n in names])] = r
        for r in _key_rows(uniques):
            k = tuple([r[n] for n in names])
            if k not in by_key:
                by_key[k] = {**{n: r[n] for n in names}, "clicks": 0, "bot_clicks": 0, "unique_clicks": 0}
            by_key[k]["unique_clicks"] += r["u"]
        rows = list(by_key.values())
    elif read.rows == "dims":
        label = next((n for n in ("g_day", "g_hour") if n in names), None)
        for r in _key_rows(dims):
            if read.labels is not None and label is not None and not read.labels[0] <= r[label] <= read.labels[1]:
                continue
            rows.append({**{n: r[n] for n in names}, "clicks": int(r["vc"]), "bot_clicks": int(r["vb"]),
                         "unique_clicks": int(r["vu"])})
    totals = dict.fromkeys(_CLICK_METRICS, 0)
    if read.totals:
        for d, (c, b) in c_day.items():
            if _within(d, read.full):
                totals["clicks"] += c
                totals["bot_clicks"] += b
                totals["unique_clicks"] += u_day.get(d, (0, 0))[1]
    return rows, totals


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

    cached: tuple[list[dict[str, Any]], dict[str, int]] | None = None
    if p.cache is not None:
        cached = read_cache(ch, p.cache, p.refresh, p.dim_refresh, keys, extra)
        if cached is None:  # clicks keep arriving faster than the caches follow: raw clicks
            p = plan(scope, params, allow_cache=False)

    link_code_of: dict[int, str] = {}
    if p.source != "raw" and "link" in keys:
        link_code_of = {int(r["id"]): str(r["code"]) for r in fetch(ch, Query(scope, LINKS, ("id", "code")))}

    columns = tuple(f"g_{k}" for k in keys)
    link_at = keys.index("link") if "link" in keys else -1

    text: dict[Any, str] = {}  # each date's or id's text, once

    def key_of(row: Mapping[str, Any]) -> tuple[str, ...]:
        out = [row[c] for c in columns]
        for i, v in enumerate(out):
            if type(v) is str:
                continue
            if v not in text:
                # Cached click rows carry link ids; raw click rows, conversions and fees carry codes.
                text[v] = link_code_of.get(int(v), "") if i == link_at else (
                    v.isoformat() if isinstance(v, date) else str(v))
            out[i] = text[v]
        return tuple(out)

    acc: dict[tuple[str, ...], dict[str, Any]] = {}

    def slot(key: tuple[str, ...]) -> dict[str, Any]:
        if key not in acc:
            acc[key] = zero()
        return acc[key]

    totals = zero()
    totals["unattributed_conversions"] = 0
    totals["unattributed_revenue"] = money.ZERO

    click_rows = [*(cached[0] if cached else ())]
    for q in p.click_rows or ():
        for r in fetch(ch, bind(q)):
            if keys and all(r[f"g_{k}"] is None for k in keys):  # the totals' share (no row's key is NULL)
                for m in _CLICK_METRICS:
                    totals[m] += int(r[m])
            else:
                click_rows.append(r)
    for r in click_rows:
        s = slot(key_of(r))
        for m in _CLICK_METRICS:
            s[m] += int(r[m])
    if p.click_totals is None:
        for r in click_rows:
            for m in _CLICK_METRICS:
                totals[m] += int(r[m])
    else:
        for m, count in (cached[1] if cached else {}).items():
            totals[m] += count
        for q in p.click_totals:
            for r in fetch(ch, bind(q)):
                for m in _CLICK_METRICS:
                    totals[m] += int(r[m])

    for r in fetch(ch, p.conversions):
        revenue, commission = Decimal(r["revenue"]), Decimal(r["commission"])
        if not r["g_attributed"]:
            totals["unattributed_conversions"] += int(r["conversions"])
            totals["unattributed_revenue"] += revenue
            continue
        targets = [totals, slot(key_of(r))] if p.conversion_rows else [totals]
        count, flagged = int(r["conversions"]), int(r["flagged_conversions"])
        by_status = [(m, Decimal(r[m])) for m in BY_STATUS]
        for t in targets:
            t["conversions"] += count
            t["flagged_conversions"] += flagged
            t["revenue"] += revenue
            t["commission"] += commission
            for m, amount in by_status:
                t[m] += amount
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

    # Key fields in the answer model's order (json_bytes sends the dicts as they are).
    order = sorted(range(len(keys)), key=lambda i: list(KEY_FIELDS).index(keys[i]))
    rows: list[dict[str, Any]] = []
    for key in sorted(acc):
        row: dict[str, Any] = {}
        for i in order:
            k, v = keys[i], key[i]
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


