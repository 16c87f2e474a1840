"""Running a report: execute the plan, check the caches, add up rows and totals with every metric.

A report's statements start at once on the ClickHouse pool (``Ahead``) and are read in order.
Results are read by column; each group's sums live in ``tracker.reports.groups``, money as
integer units (``tracker.reports.units``); the shapes of the answer (JSON models, CSV) and the
metrics live in ``tracker.reports.answer``, whose names below are re-exported for the routes and
the portal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import date
from itertools import compress
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # the type only: the caller brings its process's sync
    from tracker.quality.sync import Sync

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


class Ahead:
    """A report's statements started at once on the ClickHouse pool (``ClickHouse.submit``) and
    read in the order they are added up, so each query runs while the ones before it are read
    and added (the rows' Python work overlaps the queries). A statement read twice (a cache read
    again after a refresh) runs again."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self._started: dict[tuple[str, str, str, str], Future[Any]] = {}

    @staticmethod
    def _key(how: Callable[[ClickHouse, Statement], Any], query: Statement) -> tuple[str, str, str, str]:
        return how.__name__, query.sql, repr(sorted(query.parameters.items())), repr(sorted(query.settings.items()))

    def start(self, how: Callable[[ClickHouse, Statement], Any], query: Statement) -> None:
        key = self._key(how, query)
        if key not in self._started:
            self._started[key] = self.ch.submit(how, query)

    def dicts(self, query: Statement) -> list[dict[str, Any]]:
        self.start(fetch, query)
        result: list[dict[str, Any]] = self._started.pop(self._key(fetch, query)).result()
        return result

    def columns(self, query: Statement) -> Columns:
        self.start(fetch_columns, query)
        result: Columns = self._started.pop(self._key(fetch_columns, query)).result()
        return result


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


def _cache_reads(read: CacheRead, bound: Mapping[str, Any]) -> list[Query]:
    reads = [read.clicks, read.uniques, *((read.dims,) if read.dims is not None else ())]
    return [q.with_params(**bound) if bound else q for q in reads]


def read_cache(
    ahead: Ahead, read: CacheRead, refresh: Query | None, dim_refresh: Query | None, groups: Groups,
    bound: Mapping[str, Any],
) -> list[int] | None:
    """Cached click counts into ``groups`` (rows) and the totals' clicks, bot clicks and unique
    clicks, read once every UTC day they cover adds up (``CacheRead``); stale days are
    recomputed first. None when clicks keep arriving faster than the caches follow."""
    ch = ahead.ch
    for round_ in range(_REFRESH_ROUNDS + 1):
        reads = _cache_reads(read, bound)
        for q in reads:
            ahead.start(fetch_columns, q)
        clicks, uniques = ahead.columns(reads[0]), ahead.columns(reads[1])
        dims = ahead.columns(reads[2]) if read.dims is not None else Columns()
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

    ahead = Ahead(ch)
    links = Query(scope, LINKS, ("id", "code")) if p.source != "raw" and "link" in keys else None
    named = [(k, Query(scope, table, ("id", "name"))) for k, table in (("influencer", INFLUENCERS),
                                                                         ("campaign", CAMPAIGNS)) if k in keys]
    # Every statement starts now, in the order it is read below.
    if links is not None:
        ahead.start(fetch, links)
    for q in _cache_reads(p.cache, extra) if p.cache is not None else ():
        ahead.start(fetch_columns, q)
    for q in (*(p.click_rows or ()), *(p.click_totals or ())):
        ahead.start(fetch_columns, bind(q))
    for statement in (p.conversions, p.fee_rows, p.fee_totals):
        if statement is not None:
            ahead.start(fetch_columns, statement)
    for _, q in named:
        ahead.start(fetch, q)

    link_code_of: dict[int, str] = {}
    if links is not None:
        link_code_of = {int(r["id"]): str(r["code"]) for r in ahead.dicts(links)}
    groups = Groups(keys, link_code_of)
    totals = [0] * len(groups.sums)

    cached: list[int] | None = None
    if p.cache is not None:
        cached = read_cache(ahead, p.cache, p.refresh, p.dim_refresh, groups, extra)
        if cached is None:  # clicks keep arriving faster than the caches follow: raw clicks
            p = plan(scope, params, allow_cache=False)

    for q in p.click_rows or ():
        cols = ahead.columns(bind(q))
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
            cols = ahead.columns(bind(q))
            for at, m in enumerate(_CLICK_METRICS):
                totals[at] += sum(cols[m])

    conv = ahead.columns(p.conversions)
    attributed = [bool(a) for a in conv["g_attributed"]]
    unattributed = [not a for a in attributed]
    unattributed_conversions = sum(compress(conv["conversions"], unattributed))
    unattributed_revenue = sum(compress(conv["revenue"], unattributed))
    for at, m in _CONVERSION_METRICS:
        totals[at] += sum(compress(conv[m], attributed))
    if p.conversion_rows:
        groups.add(_key_rows(conv, attributed), {at: m for at, m in _CONVERSION_METRICS})
    if p.fee_rows is not None:
        fees = ahead.columns(p.fee_rows)
        groups.add(fees, {FEES: "fees"})
        totals[FEES] += sum(fees["fees"])
    if p.fee_totals is not None:
        totals[FEES] = sum(ahead.columns(p.fee_totals)["fees"])

    names = {k: {str(r["id"]): str(r["name"]) for r in ahead.dicts(q)} for k, q in named}

    write = writer(currency)
    rows = groups.rows(names, write, p.fees_allocated)
    total = finish(totals, write, fees_allocated=params.link_code is None)
    total["unattributed_conversions"] = unattributed_conversions
    total["unattributed_revenue"] = write.money(unattributed_revenue)
    return Report(params, currency, p.source, rows, total)


def run_beside_sync(
    ch: ClickHouse, sync: Sync, brand: Mapping[str, Any], params: ReportParams, max_days: int
) -> tuple[Report | None, bool]:
    """The report with the brand's quality sync (``tracker.quality.sync``: click facts and flags the
    report reads) running beside it on the pool instead of before it: when nothing changed (the
    usual case) the sync costs its fingerprint query, which then overlaps the report's queries.
    Returns the report and whether the sync evaluated anything. The report is None when it may
    have read flags from before an evaluation (this sync's, or another thread's that finished
    meanwhile): the caller runs it again, after holding commission when ``evaluated``. So the
    answer is what the sync followed by the report gives: a conversion the fingerprint saw is
    evaluated before any report that is returned, one that arrives while both run is evaluated
    by the next call either way."""
    brand_id = str(brand["id"])
    before = sync.evaluations(brand_id)
    checked = ch.submit(sync, brand_id)
    try:
        report: Report | None = run_report(ch, brand, params, max_days)
    except BaseException:
        # The sync finishes either way; what it evaluated is not held yet: the next call evaluates again.
        if checked.exception() is None and checked.result():
            sync.forget(brand_id)
        raise
    evaluated = checked.result()
    if evaluated or sync.evaluations(brand_id) != before:
        report = None
    return report, evaluated


_CONVERSION_METRICS = (
    (CONVERSIONS, "conversions"), (FLAGGED, "flagged_conversions"), (REVENUE, "revenue"), (COMMISSION, "commission"),
    (PENDING, "pending_commission"), (PAYABLE, "payable_commission"), (PAID, "paid_commission"),
)


__all__ = [
    "KEY_FIELDS", "METRICS", "RATIO_PLACES", "TOTAL_METRICS", "Metrics", "Report", "ReportAnswer", "ReportRow",
    "Totals", "fetch", "money_str", "ratio", "refresh_uniques", "run_beside_sync", "run_report",
]


