"""Running a report: execute the plan, check the caches, add up rows and totals with every metric.

Results are read by column; each group's sums live in ``tracker.reports.groups``, money as
integer units (``tracker.reports.units``); the shapes of the answer (JSON models, CSV) and the
metrics live in ``tracker.reports.answer``, whose names below are re-exported for the routes and
the portal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from itertools import compress
from typing import Any

from tracker.reports import sql, units
from tracker.reports.answer import (
    BOT_CLICKS,
    CLICKS,
    COMMISSION,
    CONVERSIONS,
    FEES,
    FLAGGED,
    KEY_FIELDS,
    METRICS,
    PAID,
    PAYABLE,
    PENDING,
    RATIO_PLACES,
    REVENUE,
    TOTAL_METRICS,
    UNIQUE_CLICKS,
    Metrics,
    Report,
    ReportAnswer,
    ReportRow,
    Totals,
    finish,
    money_str,
    ratio,
    writer,
)
from tracker.reports.groups import Groups
from tracker.reports.params import ReportParams
from tracker.reports.plan import plan
from tracker.reports.sql import CAMPAIGNS, INFLUENCERS, LINKS, CacheRead, Join, Query, Scope, Statement
from tracker.storage.clickhouse import ClickHouse, Columns

# Rounds of (find stale days, recompute them) before a report gives up on the cache.
_REFRESH_ROUNDS = 2


def _checked(query: Statement) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """A report statement's SQL, bound parameters and settings; only gated Query objects run."""
    if not isinstance(query, Query | Join):
        raise TypeError("Reports run Query objects only.")
    settings = query.settings
    return query.sql, query.parameters, dict(settings) if settings else None


def fetch(ch: ClickHouse, query: Statement) -> list[dict[str, Any]]:
    sql_, parameters, settings = _checked(query)
    return ch.query_dicts(sql_, parameters, settings=settings)


def fetch_columns(ch: ClickHouse, query: Statement) -> Columns:
    """The result by column, each money sum (``units.units_sql``) as one column of units."""
    sql_, parameters, settings = _checked(query)
    cols = ch.query_columns(sql_, parameters, settings=settings)
    for high in [name for name in cols if name.endswith("_hi")]:
        low = high.removesuffix("_hi")
        cols[low] = units.units_of(cols[low], cols.pop(high))
    return cols


def refresh_uniques(ch: ClickHouse, query: Query) -> None:
    """Write recomputed (link, UTC day) unique counts into the cache table."""
    if not isinstance(query, Query) or query.table is not sql.CLICKS:
        raise TypeError("The unique-clicks cache is filled from a gated clicks Query only.")
    ch.command(
        "INSERT INTO report_daily_uniques (brand_id, day, link_id, campaign_id, influencer_id, clicks, uniques, "
        f"computed_at) {query.sql}",
        query.parameters,
    )


def refresh_dims(ch: ClickHouse, query: Query) -> None:
    """Write recomputed (link, UTC day, value) counts of one dimension into its cache table."""
    if not isinstance(query, Query) or query.table is not sql.CLICKS:
        raise TypeError("The dimension cache is filled from a gated clicks Query only.")
    ch.command(
        "INSERT INTO report_dim_uniques (brand_id, dim, day, link_id, value, campaign_id, influencer_id, clicks, "
        f"bot_clicks, uniques, computed_at) {query.sql}",
        query.parameters,
    )


_CLICK_METRICS = ("clicks", "bot_clicks", "unique_clicks")


def _per_day(cols: Columns, names: tuple[str, str]) -> dict[date, tuple[int, int]]:
    """Sums per UTC day: the ``u_day`` rows of a grouping set, or rows keyed by the UTC day itself."""
    out: dict[date, tuple[int, int]] = {}
    get = out.get
    for d, x, y in zip(cols["u_day"] if "u_day" in cols else cols["g_day"], cols[names[0]], cols[names[1]],
                       strict=True):
        if d is not None:
            a, b = get(d, (0, 0))
            out[d] = (a + x, b + y)
    return out


def _key_rows(cols: Columns, keep: list[bool] | None = None) -> Columns:
    """The rows of the report's keys (not the per-day grouping set), those of ``keep`` only."""
    if "u_day" in cols:
        keys = [d is None for d in cols["u_day"]]
        keep = keys if keep is None else [a and b for a, b in zip(keys, keep, strict=True)]
    if keep is None:
        return cols
    return Columns((name, list(compress(values, keep))) for name, values in cols.items())


def _within(d: date, days: tuple[date, date] | None) -> bool:
    return days is not None and days[0] <= d <= days[1]


def read_cache(
    ch: ClickHouse, read: CacheRead, refresh: Query | None, dim_refresh: Query | None, groups: Groups,
    bound: Mapping[str, Any],
) -> list[int] | None:
    """Cached click counts into ``groups`` (rows) and the totals' clicks, bot clicks and unique
    clicks, read once every UTC day they cover adds up (``CacheRead``); stale days are
    recomputed first. None when clicks keep arriving faster than the caches follow."""
    def bind(q: Query) -> Query:
        return q.with_params(**bound) if bound else q

    for round_ in range(_REFRESH_ROUNDS + 1):
        clicks = fetch_columns(ch, bind(read.clicks))
        uniques = fetch_columns(ch, bind(read.uniques))
        dims = fetch_columns(ch, bind(read.dims)) if read.dims is not None else Columns()
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

    if read.rows == "daily":
        groups.add(_key_rows(clicks), {CLICKS: "c", BOT_CLICKS: "b"})
        groups.add(_key_rows(uniques), {UNIQUE_CLICKS: "u"})
    elif read.rows == "dims":
        label = next((n for n in ("g_day", "g_hour") if n in groups.columns), None)
        keep = None
        if read.labels is not None and label is not None:
            lo, hi = read.labels
            keep = [v is not None and lo <= v <= hi for v in dims[label]]
        groups.add(_key_rows(dims, keep), {CLICKS: "vc", BOT_CLICKS: "vb", UNIQUE_CLICKS: "vu"})
    totals = [0, 0, 0]
    if read.totals:
        for d, (c, b) in c_day.items():
            if _within(d, read.full):
                totals[0] += c
                totals[1] += b
                totals[2] += u_day.get(d, (0, 0))[1]
    return totals


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
    groups = Groups(keys, link_code_of)
    totals = [0] * len(groups.sums)

    cached: list[int] | None = None
    if p.cache is not None:
        cached = read_cache(ch, p.cache, p.refresh, p.dim_refresh, groups, extra)
        if cached is None:  # clicks keep arriving faster than the caches follow: raw clicks
            p = plan(scope, params, allow_cache=False)

    for q in p.click_rows or ():
        cols = fetch_columns(ch, bind(q))
        if keys:
            # The totals' share: rows whose every key is NULL (no row's key is NULL).
            share = [all(nulls) for nulls in zip(*([v is None for v in cols[c]] for c in groups.columns), strict=True)]
            if any(share):
                for at, m in enumerate(_CLICK_METRICS):
                    totals[at] += sum(compress(cols[m], share))
                cols = _key_rows(cols, [not s for s in share])
            groups.add(cols, dict(enumerate(_CLICK_METRICS)))
        else:
            for at, m in enumerate(_CLICK_METRICS):
                totals[at] += sum(cols[m])
    if p.click_totals is None:
        for at in range(len(_CLICK_METRICS)):
            totals[at] += sum(groups.sums[at])
    else:
        for at, count in enumerate(cached or ()):
            totals[at] += count
        for q in p.click_totals:
            cols = fetch_columns(ch, bind(q))
            for at, m in enumerate(_CLICK_METRICS):
                totals[at] += sum(cols[m])

    conv = fetch_columns(ch, p.conversions)
    attributed = [bool(a) for a in conv["g_attributed"]]
    unattributed = [not a for a in attributed]
    unattributed_conversions = sum(compress(conv["conversions"], unattributed))
    unattributed_revenue = sum(compress(conv["revenue"], unattributed))
    for at, m in _CONVERSION_METRICS:
        totals[at] += sum(compress(conv[m], attributed))
    if p.conversion_rows:
        groups.add(_key_rows(conv, attributed), {at: m for at, m in _CONVERSION_METRICS})
    if p.fee_rows is not None:
        fees = fetch_columns(ch, p.fee_rows)
        groups.add(fees, {FEES: "fees"})
        totals[FEES] += sum(fees["fees"])
    if p.fee_totals is not None:
        totals[FEES] = sum(fetch_columns(ch, p.fee_totals)["fees"])

    names: dict[str, dict[str, str]] = {}
    for k, table in (("influencer", INFLUENCERS), ("campaign", CAMPAIGNS)):
        if k in keys:
            names[k] = {str(r["id"]): str(r["name"]) for r in fetch(ch, Query(scope, table, ("id", "name")))}

    write = writer(currency)
    rows = groups.rows(names, write, p.fees_allocated)
    total = finish(totals, write, fees_allocated=params.link_code is None)
    total["unattributed_conversions"] = unattributed_conversions
    total["unattributed_revenue"] = write.money(unattributed_revenue)
    return Report(params, currency, p.source, rows, total)


_CONVERSION_METRICS = (
    (CONVERSIONS, "conversions"), (FLAGGED, "flagged_conversions"), (REVENUE, "revenue"), (COMMISSION, "commission"),
    (PENDING, "pending_commission"), (PAYABLE, "payable_commission"), (PAID, "paid_commission"),
)


__all__ = [
    "KEY_FIELDS", "METRICS", "RATIO_PLACES", "TOTAL_METRICS", "Metrics", "Report", "ReportAnswer", "ReportRow",
    "Totals", "fetch", "money_str", "ratio", "refresh_uniques", "run_report",
]


