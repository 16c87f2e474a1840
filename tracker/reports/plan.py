"""Which statements answer a report: the click source per grouping, conversions, fees, totals.

- ``cached``: clicks and bot clicks from the daily rollup (``CLICKS_DAILY``: the ``daily``
  projection stored inside the parts of ``clicks``, migration 0023), unique
  clicks from ``report_daily_uniques``, exact unique counts per (link, UTC day) that reports
  compute from raw clicks and keep. A cached count is used only while it still equals the
  clicks it was computed with, checked per UTC day (``CacheRead``): clicks are only ever
  added, so each cached (link, day) count is at most that (link, day)'s clicks, and a day's
  sums are equal exactly when every (link, day) of it is; a day that differs is recomputed
  first, so the cache never changes an answer. Each cache table is read once per report:
  grouped by the report's keys with a second grouping set per UTC day beside them (or by the
  day alone), so the rows and their check come from one read. Used for UTC-aligned
  ranges grouped by influencer, campaign, link or day, and for any zone grouped by
  influencer, campaign or link (the two partial UTC days at the edges of the range then
  come from raw clicks).
- ``cached`` by dimension, UTC-aligned ranges grouped by one of hour, country, device, a UTM
  value or referer (alone or with influencer, campaign, link, day): ``report_dim_uniques``,
  exact counts per (link, UTC day, value) that reports compute from raw clicks and keep; a
  day is used only while its values' clicks and bot clicks add up to its counts in
  the daily rollup, else it is recomputed first (``dim_refresh``). In another zone: local
  days or hours are the dimensions ``day@<zone>``/``hour@<zone>`` (value: the local label),
  read over every whole UTC day the range touches, labels outside the range dropped; any
  other single dimension reads its full UTC days from the cache and the edge days from raw
  clicks.
- ``raw``: ``clicks`` for every other grouping (several dimensions, or a dimension beside a
  local day):
  distinct visitors per (link, UTC day), added up. Measured on 10M clicks, building them from
  the raw columns (~0.2 s for 30 days) beats merging stored hourly visitor sets (~0.8 s), so
  there is no hourly rollup.
- clicks know no coupon, attribution, store, status or customer: rows grouped by one of these
  show 0 clicks, and the totals carry them.
- conversions, revenue, commission: ``conversions`` FINAL, attributed, status approved or
  pending, by ``occurred_at``, joined with their quality flags (``flagged_conversions``). A
  click-attributed conversion takes country, device, referer and UTM values from its click
  (``conversion_clicks``, filled by ``tracker.quality.facts`` before the report); any other
  conversion takes the country the store sent, no device, referer or UTM. ``customer`` is
  ``returning`` when the customer (by keyed hash) has an earlier order with the brand, else
  ``new`` (an order without a customer id cannot be recognised: new).
- fees: ``fees`` FINAL by fee date (a calendar date, independent of ``tz``). A fee belongs to
  an influencer and a campaign on a date, so only rows grouped by those keys can carry fees;
  rows grouped by any other key carry ``fees``, ``cost`` and ``roi`` as null (not allocated),
  and the totals carry the fees. With a ``link`` filter fees are not allocated anywhere.
- Totals are added up from the rows when every click, conversion and fee falls in exactly
  one row; otherwise they are queried on their own (a visitor's UTC day can span two local
  days or hours, so unique clicks of such rows do not add up to the total).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from tracker.money.lifecycle import PAID_IDS_SQL, status_sql
from tracker.reports import units
from tracker.reports.params import ReportParams
from tracker.reports.sql import (
    ALL_CONVERSIONS,
    CLICKS,
    CLICKS_DAILY,
    CONVERSION_CLICKS,
    CONVERSION_FLAGS,
    CONVERSIONS,
    DAILY_UNIQUES,
    DIM_UNIQUES,
    FEES,
    LINKS,
    CacheRead,
    Join,
    Query,
    Scope,
    Table,
    sql_time,
)

# Click keys only raw clicks know; keys fees can be grouped by.
_RAW_ONLY = frozenset({"country", "device", "utm_source", "utm_medium", "utm_campaign", "referer"})
_FEE_KEYS = frozenset({"influencer", "campaign", "day"})

# Group key -> SQL expression, per source. Aliased as g_<key>.
_CLICK_RAW = {
    "influencer": "influencer_id",
    "campaign": "campaign_id",
    "link": "link_code",
    "day": "toDate(ts, {tz:String})",
    "hour": "formatDateTime(ts, '%Y-%m-%dT%H:00', {tz:String})",
    "country": "country",
    "device": "device",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "referer": "referer_host",
}
_CLICK_KEYS = frozenset(_CLICK_RAW)
# Click dimensions with a cache per (link, UTC day, value): the value as the clicks give it.
_DIMS = {k: v for k, v in _CLICK_RAW.items() if k in _RAW_ONLY}
_DIMS["hour"] = "formatDateTime(ts, '%Y-%m-%dT%H:00', 'UTC')"
# In another zone, days and hours are dimensions too (``day@<zone>``): the local day or hour
# of each click, as text, per (link, UTC day), so a report of local days or hours sums cached
# rows exactly as it sums raw ones (unique clicks are per (link, UTC day) either way).
_ZONED = {
    "day": "toString(toDate(ts, {f_zone:String}))",
    "hour": "formatDateTime(ts, '%Y-%m-%dT%H:00', {f_zone:String})",
}
# Raw clicks keyed like the cache (link by id), for the edge days next to cached full days.
_CLICK_BY_ID = {
    "influencer": "influencer_id",
    "campaign": "campaign_id",
    "link": "link_id",
}
# In the daily rollup and the caches, all keyed by link id and UTC day.
_DAILY = {"influencer": "influencer_id", "campaign": "campaign_id", "link": "link_id", "day": "day"}
_PROJECTED = ("countIf(is_bot = 0) AS clicks", "countIf(is_bot = 1) AS bot_clicks")  # as migration 0023 has them
_FROM_CLICK = "attribution = 'click' AND k_click != ''"
_CONVERSION = {
    "influencer": "influencer_id",
    "campaign": "campaign_id",
    "link": "link_code",
    "day": "toDate(occurred_at, {tz:String})",
    "hour": "formatDateTime(occurred_at, '%Y-%m-%dT%H:00', {tz:String})",
    "coupon": "upper(coupon_code)",  # coupons match in any case (registry.links)
    "attribution": "attribution",
    "store": "store_id",
    "status": "status",
    "customer": "if(customer_hash != '' AND f_first != order_id, 'returning', 'new')",
    "country": f"if({_FROM_CLICK}, k_country, country)",
    "device": f"if({_FROM_CLICK}, k_device, '')",
    "utm_source": f"if({_FROM_CLICK}, k_utm_source, '')",
    "utm_medium": f"if({_FROM_CLICK}, k_utm_medium, '')",
    "utm_campaign": f"if({_FROM_CLICK}, k_utm_campaign, '')",
    "referer": f"if({_FROM_CLICK}, k_referer, '')",
}
_FACTS = (
    "click_id", "click_id AS k_click", "country AS k_country", "device AS k_device", "referer_host AS k_referer",
    "utm_source AS k_utm_source", "utm_medium AS k_utm_medium", "utm_campaign AS k_utm_campaign",
)
_FEE = {"influencer": "influencer_id", "campaign": "campaign_id", "day": "date"}
_CACHE_KEYS = frozenset(_DAILY)
# Keys whose rows never split a UTC day: the cache serves every full UTC day of any range.
_WHOLE_DAY_KEYS = frozenset({"influencer", "campaign", "link"})

_COUNTED = "status IN ('approved', 'pending')"
_NET = "(amount - refunded_amount)"
# Commission by its lifecycle status now (tracker.money.lifecycle): pending, payable, paid;
# computed once per conversion (l_status), then summed per status.
_LIFECYCLE = status_sql(f"conversion_id IN ({PAID_IDS_SQL})", now="now64(3, 'UTC')")
_CONVERSION_COLUMNS = (
    "order_id", "click_id", "customer_hash", "attribution", "attributed", "influencer_id", "campaign_id",
    "link_code", "occurred_at", "coupon_code", "store_id", "status", "country", "amount", "refunded_amount",
    "commission", f"{_LIFECYCLE} AS l_status",
)


# Money sums leave as integer units (tracker.reports.units). ``commission`` alone would be the
# alias of its own sum here.
_MONEY = tuple(part for name, total in (
    ("revenue", f"sum({_NET})"),
    ("commission", "sum(r.commission)"),
    *((f"{s}_commission", f"sumIf(r.commission, l_status = '{s}')") for s in ("pending", "payable", "paid")),
) for part in units.units_sql(total, name))
_FEES = units.units_sql("sum(amount)", "fees")


@dataclass(frozen=True)
class Plan:
    """The statements of one report; ``None`` where a source does not apply.

    ``source``: ``cached`` (daily rollup counts + cached exact daily uniques) or ``raw``
    (the clicks table). ``cache``: the cached counts (rows and/or totals); ``click_rows`` and
    ``click_totals``: raw clicks beside them (edge days) or instead of them. Totals that are
    sums of the rows (every click, conversion and fee in exactly one row; every (link,
    visitor, UTC day) in one row) are added up from the rows instead of queried.
    """

    source: str
    cache: CacheRead | None
    click_rows: tuple[Query, ...] | None
    click_totals: tuple[Query, ...] | None
    conversions: Join
    conversion_rows: bool
    fees_allocated: bool
    fee_rows: Query | None
    fee_totals: Query | None
    link_ids: Query | None
    refresh: Query | None = None
    dim_refresh: Query | None = None


def plan(scope: Scope, params: ReportParams, *, allow_cache: bool = True) -> Plan:
    keys = params.group_by
    aligned = scope.utc_aligned()
    if not aligned:
        first = scope.start.date() + timedelta(days=0 if scope.start.time() == time(0) else 1)
        last = scope.end.date() - timedelta(days=1)
    full_days = aligned or first <= last

    def mode(ks: tuple[str, ...]) -> str:
        # Cached: UTC-aligned ranges for keys up to the day; other zones for keys that never
        # split a day (their full UTC days from the cache, the partial edge days from raw
        # clicks). The totals (no keys) qualify in any zone. One click dimension beside such
        # keys: ``dims`` (UTC-aligned), ``zoned`` (local days or hours, every UTC day the range
        # touches from the cache), ``edges`` (full UTC days from the cache, edges raw).
        d = dim_of(ks, aligned, scope.tz)
        if d is not None:
            if not allow_cache:
                return "raw"
            if aligned:
                return "dims"
            return "zoned" if "@" in d else "edges" if full_days else "raw"
        if set(ks) & _RAW_ONLY:
            return "raw"
        if allow_cache and (set(ks) <= _WHOLE_DAY_KEYS or (aligned and set(ks) <= _CACHE_KEYS)):
            return "cached"
        return "raw"

    # Keys clicks do not know (coupon, store, ...): the clicks are in the totals only.
    click_keys = set(keys) <= _CLICK_KEYS
    row_mode = mode(keys) if keys and click_keys else None
    total_mode = mode(())
    dim = dim_of(keys, aligned, scope.tz) if row_mode in ("dims", "zoned", "edges") else None
    source = "cached" if row_mode in ("cached", "dims", "zoned", "edges") or (
        row_mode is None and total_mode == "cached") else "raw"
    any_cached = "cached" in (row_mode, total_mode) or dim is not None
    # The zoned dimension's cache rows: every UTC day the range touches, whole.
    wide = scope.utc_days()
    full_where: tuple[str, ...] = ()
    edge_where: tuple[str, ...] | None = None
    day_params: dict[str, Any] = {}
    full = (scope.date_from, scope.date_to) if aligned else (first, last) if full_days else None
    if not aligned:
        day_params = {
            "f_first_day": first,
            "f_last_day": last,
            "f_full_start": sql_time(datetime.combine(first, time(0), UTC))[:19],
            "f_full_end": sql_time(datetime.combine(last + timedelta(days=1), time(0), UTC))[:19],
        }
        full_where = ("day >= {f_first_day:Date} AND day <= {f_last_day:Date}",)
        edge_where = ("ts < {f_full_start:DateTime('UTC')} OR ts >= {f_full_end:DateTime('UTC')}",)

    filters: dict[str, Any] = {}
    common: list[str] = []
    if params.campaign_id is not None:
        common.append("campaign_id = {f_campaign:String}")
        filters["f_campaign"] = params.campaign_id
    if params.influencer_id is not None:
        common.append("influencer_id = {f_influencer:String}")
        filters["f_influencer"] = params.influencer_id
    by_code = list(common)
    by_id = list(common)
    link_ids = None
    if params.link_code is not None:
        filters["f_link"] = params.link_code
        by_code.append("link_code = {f_link:String}")
        by_id.append("link_id IN {f_link_ids:Array(UInt64)}")
        link_ids = Query(scope, LINKS, ("id",), ("code = {f_link:String}",), params={"f_link": params.link_code})
    id_filters = {k: v for k, v in filters.items() if k != "f_link"}

    def aliased(exprs: Mapping[str, str], ks: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{exprs[k]} AS g_{k}" for k in ks)

    def names(ks: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"g_{k}" for k in ks)

    def by_day(
        sc: Scope, table: Table, exprs: Mapping[str, str], ks: tuple[str, ...], sums: tuple[str, ...],
        where: tuple[str, ...], extra: Mapping[str, Any], utc_day_key: bool,
    ) -> Query:
        # Sums per UTC day (u_day) and, with keys, per key: one read. Rows whose keys hold the
        # UTC day already give the days; other keys are a second grouping set beside the day.
        sel: tuple[str, ...] = ("day AS u_day",)
        group: tuple[str, ...] = ("u_day",)
        settings: dict[str, int] = {}
        if ks and utc_day_key:
            sel, group = (), names(ks)
        elif ks:
            group = (f"GROUPING SETS ((u_day), ({', '.join(names(ks))}))",)
            settings = {"group_by_use_nulls": 1}
        return Query(sc, table, (*sel, *aliased(exprs, ks), *sums), where, group, {**id_filters, **extra},
                     settings=settings)

    def cache_read(ks: tuple[str, ...], m: str | None) -> CacheRead:
        # Daily rollup + cached uniques grouped by ks (rows), or per day only (totals, checks).
        daily_keys = ks if m == "cached" else ()
        sc, where, extra = (scope, (*by_id, *full_where), day_params) if daily_keys else (wide, tuple(by_id), {})
        clicks = by_day(sc, CLICKS_DAILY, _DAILY, daily_keys, ("sum(clicks) AS c", "sum(bot_clicks) AS b"),
                        where, extra, "day" in daily_keys)
        # The projection answers a GROUP BY of its own expressions only, not grouping sets: by
        # the day and the keys first, then the sums above over those rows.
        inner = ("day", *(_DAILY[k] for k in daily_keys if k != "day"))
        clicks = Query(sc, CLICKS_DAILY, ("toDate(ts, 'UTC') AS day", *inner[1:], *_PROJECTED), where, inner,
                       clicks.params, clicks.select, clicks.group_by, clicks.settings)
        uniques = by_day(sc, DAILY_UNIQUES, _DAILY, daily_keys, ("sum(clicks) AS cc", "sum(uniques) AS u"),
                         where, extra, "day" in daily_keys)
        dims = labels = dim_days = None
        if dim is not None and m in ("dims", "zoned", "edges"):
            key = dim.partition("@")[0]
            exprs = {**_DAILY, key: "value"}
            dim_where: tuple[str, ...] = (*by_id, "dim = {f_dim:String}")
            dim_extra: dict[str, Any] = {"f_dim": dim}
            if m == "zoned":  # local labels sort as text: the range's own days or hours
                lo, hi = scope.date_from.isoformat(), scope.date_to.isoformat()
                labels = (lo, hi + "T23:00" if key == "hour" else hi)
                dim_days = (wide.date_from, wide.date_to)
            elif m == "edges":
                dim_where += full_where
                dim_extra.update(day_params)
                dim_days = full
            else:
                dim_days = full
            dims = by_day(
                wide if m == "zoned" else scope, DIM_UNIQUES, exprs, ks,
                ("sum(clicks) AS vc", "sum(bot_clicks) AS vb", "sum(uniques) AS vu"), dim_where, dim_extra,
                "day" in ks and m == "dims",
            )
        rows = "daily" if daily_keys else "dims" if dims is not None else None
        return CacheRead(clicks, uniques, dims, full, dim_days, rows, not additive, labels)

    def raw_clicks(ks: tuple[str, ...], m: str) -> tuple[Query, ...]:
        # Raw clicks: the whole grouping, or the partial UTC days at the edges of a cached one.
        if m == "raw":
            return (link_days(_CLICK_RAW, ks, tuple(by_code), filters),)
        if edge_where is None or m in ("dims", "zoned"):
            return ()
        exprs = {**_CLICK_BY_ID, **({dim: _DIMS[dim]} if dim and m == "edges" else {})}
        # A dimension's edge rows carry the totals' edge share too: a row with every key NULL.
        return (link_days(exprs, ks, (*by_id, *edge_where), {**id_filters, **day_params}, m == "edges"),)

    def link_days(
        exprs: Mapping[str, str], ks: tuple[str, ...], where: tuple[str, ...], params: Mapping[str, Any],
        with_totals: bool = False,
    ) -> Query:
        # Distinct visitors per (link, UTC day) from raw clicks, then added up: a set of UInt64 per
        # pair is ~3x cheaper than one set of (link, visitor, day) tuples per row, and the same number.
        inner = (
            *aliased(exprs, ks),
            "link_id AS l_id",
            "toDate(ts, 'UTC') AS u_day",
            "countIf(is_bot = 0) AS c",
            "countIf(is_bot = 1) AS b",
            "uniqExactIf(visitor_hash, is_bot = 0) AS u",
        )
        group: tuple[str, ...] = (*names(ks), "l_id", "u_day")
        if with_totals and ks:
            group = (f"GROUPING SETS (({', '.join(group)}), (l_id, u_day))",)
        return Query(
            scope, CLICKS, inner, where, group, params,
            outer=(*names(ks), "sum(c) AS clicks", "sum(b) AS bot_clicks", "sum(u) AS unique_clicks"),
            outer_group_by=names(ks), settings={"group_by_use_nulls": 1} if with_totals and ks else {},
        )

    # Unique clicks add up over rows when no (link, visitor, UTC day) can fall into two rows.
    additive = bool(keys) and set(keys) <= _CACHE_KEYS and ("day" not in keys or aligned)

    conversion_rows = bool(keys)
    more: list[tuple[Query, tuple[str, ...]]] = []
    if set(keys) & _RAW_ONLY:
        more.append((Query(scope, CONVERSION_CLICKS, _FACTS), ("click_id",)))
    if "customer" in keys:
        first_orders = Query(
            scope, ALL_CONVERSIONS, ("customer_hash", "argMin(order_id, (occurred_at, order_id)) AS f_first"),
            ("customer_hash != ''",), ("customer_hash",),
        )
        more.append((first_orders, ("customer_hash",)))
    conversions = Join(
        Query(
            scope, CONVERSIONS, _CONVERSION_COLUMNS, (*by_code, _COUNTED), (), filters,
            # Every version of an order keeps its occurred_at (postbacks copy it forward), so an
            # order's rows share one monthly partition and FINAL need not merge across them.
            settings={"do_not_merge_across_partitions_select_final": 1},
        ),
        Query(scope, CONVERSION_FLAGS, ("order_id", "notEmpty(flags) AS q_flagged")),
        ("order_id",),
        (*aliased(_CONVERSION, keys), "attributed AS g_attributed", "count() AS conversions",
         "countIf(q_flagged) AS flagged_conversions", *_MONEY),
        group_by=(*names(keys), "g_attributed"),
        more=tuple(more),
    )
    fees_allocated = params.link_code is None and set(keys) <= _FEE_KEYS
    fee_rows = fee_totals = None
    if params.link_code is None:
        if keys and set(keys) <= _FEE_KEYS:
            fee_rows = Query(scope, FEES, (*aliased(_FEE, keys), *_FEES), tuple(common), names(keys), id_filters)
        else:
            fee_totals = Query(scope, FEES, _FEES, tuple(common), (), id_filters)

    refresh = dim_refresh = None
    cache = None
    if row_mode in ("cached", "dims", "zoned", "edges"):
        cache = cache_read(keys, row_mode)
    elif total_mode == "cached" and not additive:
        cache = cache_read((), None)
    if cache is not None:
        refresh = Query(
            scope, CLICKS,
            ("{brand:String}", "toDate(ts, 'UTC') AS day", "link_id", "campaign_id", "influencer_id",
             "countIf(is_bot = 0)", "uniqExactIf(visitor_hash, is_bot = 0)", "now64(6)"),
            (*by_id, "toDate(ts, 'UTC') IN {f_days:Array(Date)}"),
            ("day", "link_id", "campaign_id", "influencer_id"), id_filters,
        )
    if cache is not None and cache.dims is not None and dim is not None:
        zoned = row_mode == "zoned"
        key = dim.partition("@")[0]
        dim_refresh = Query(
            wide if zoned else scope, CLICKS,
            ("{brand:String}", "{f_dim:String}", "toDate(ts, 'UTC') AS day", "link_id",
             f"{_ZONED[key] if zoned else _DIMS[key]} AS value", "any(campaign_id)", "any(influencer_id)",
             "countIf(is_bot = 0)", "countIf(is_bot = 1)", "uniqExactIf(visitor_hash, is_bot = 0)", "now64(6)"),
            (*by_id, "toDate(ts, 'UTC') IN {f_days:Array(Date)}"), ("day", "link_id", "value"),
            {**id_filters, "f_dim": dim, **({"f_zone": scope.tz} if zoned else {})},
        )
    return Plan(
        source=source,
        cache=cache,
        click_rows=raw_clicks(keys, row_mode) if row_mode is not None else None,
        click_totals=None if additive else () if row_mode == "edges" else raw_clicks((), total_mode),
        conversions=conversions,
        conversion_rows=conversion_rows,
        fees_allocated=fees_allocated,
        fee_rows=fee_rows,
        fee_totals=fee_totals,
        link_ids=link_ids if any_cached else None,
        refresh=refresh,
        dim_refresh=dim_refresh,
    )


def dim_of(keys: tuple[str, ...], aligned: bool = True, tz: str = "UTC") -> str | None:
    """The click dimension a grouping can read from ``report_dim_uniques``: exactly one, beside
    keys that never split a (link, UTC day). In another zone than UTC, a local day or hour is
    the dimension ``day@<zone>`` or ``hour@<zone>``, beside influencer, campaign or link."""
    if aligned:
        dims = [k for k in keys if k in _DIMS]
        if len(dims) == 1 and set(keys) - {dims[0]} <= _CACHE_KEYS:
            return dims[0]
        return None
    dims = [k for k in keys if k in _DIMS or k == "day"]
    if len(dims) != 1 or not set(keys) - {dims[0]} <= _WHOLE_DAY_KEYS:
        return None
    return f"{dims[0]}@{tz}" if dims[0] in _ZONED else dims[0]

