"""Which statements answer a report: the click source per grouping, conversions, fees, totals.

- ``cached``: clicks and bot clicks from the daily rollup ``clicks_daily`` (a view that reads
  the ``daily`` projection stored inside the parts of ``clicks``, migration 0023), unique
  clicks from ``report_daily_uniques``, exact unique counts per (link, UTC day) that reports
  compute from raw clicks and keep. A cached count is used only while that (link, day)'s
  click count still equals the one it was computed with (clicks are only ever added), else
  the day is recomputed first, so the cache never changes an answer. Used for UTC-aligned
  ranges grouped by influencer, campaign, link or day, and for any zone grouped by
  influencer, campaign or link (the two partial UTC days at the edges of the range then
  come from raw clicks).
- ``cached`` by dimension, UTC-aligned ranges grouped by one of hour, country, device, a UTM
  value or referer (alone or with influencer, campaign, link, day): ``report_dim_uniques``,
  exact counts per (link, UTC day, value) that reports compute from raw clicks and keep; a
  (link, day) is used only while its values' counts add up to its counts in ``clicks_daily``,
  else the day is recomputed first (``dim_stale``, ``dim_refresh``). In another zone: local
  days or hours are the dimensions ``day@<zone>``/``hour@<zone>`` (value: the local label),
  read over every whole UTC day the range touches and filtered by label; any other single
  dimension reads its full UTC days from the cache and the edge days from raw clicks.
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
    Join,
    Query,
    Scope,
    Statement,
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
# On the (link, UTC day) join of the daily counts and the cache (UTC-aligned ranges only).
_CLICK_CACHED = {"influencer": "r_inf", "campaign": "r_cmp", "link": "link_id", "day": "day"}
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
_CONVERSION_COLUMNS = (
    "order_id", "click_id", "customer_hash", "attribution", "attributed", "influencer_id", "campaign_id",
    "link_code", "occurred_at", "coupon_code", "store_id", "status", "country", "amount", "refunded_amount",
    "commission", "conversion_id", "review", "hold_days",
)
_FACTS = (
    "click_id", "click_id AS k_click", "country AS k_country", "device AS k_device", "referer_host AS k_referer",
    "utm_source AS k_utm_source", "utm_medium AS k_utm_medium", "utm_campaign AS k_utm_campaign",
)
_FEE = {"influencer": "influencer_id", "campaign": "campaign_id", "day": "date"}
_CACHE_KEYS = frozenset(_CLICK_CACHED)
# Keys whose rows never split a UTC day: the cache serves every full UTC day of any range.
_WHOLE_DAY_KEYS = frozenset({"influencer", "campaign", "link"})
_PAIR = ("link_id", "day")

_COUNTED = "status IN ('approved', 'pending')"
_NET = "(amount - refunded_amount)"
# Commission by its lifecycle status now (tracker.money.lifecycle): pending, payable, paid.
_LIFECYCLE = status_sql(f"conversion_id IN ({PAID_IDS_SQL})", now="now64(3, 'UTC')")
# (The joined column r.commission: ``commission`` alone is the alias of its sum in the same SELECT.)
_BY_STATUS = tuple(f"sumIf(r.commission, {_LIFECYCLE} = '{s}') AS {s}_commission"
                   for s in ("pending", "payable", "paid"))


@dataclass(frozen=True)
class Plan:
    """The statements of one report; ``None`` where a source does not apply.

    ``source``: ``cached`` (daily rollup counts + cached exact daily uniques) or ``raw``
    (the clicks table). Totals that are sums
    of the rows (every click, conversion and fee in exactly one row; every (link, visitor,
    UTC day) in one row) are added up from the rows instead of queried: ``*_totals`` is None.
    """

    source: str
    click_rows: tuple[Statement, ...] | None
    click_totals: tuple[Statement, ...] | None
    conversions: Join
    conversion_rows: bool
    fees_allocated: bool
    fee_rows: Query | None
    fee_totals: Query | None
    link_ids: Query | None
    stale_days: Join | None = None
    refresh: Query | None = None
    dim_stale: Join | None = None
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
    source = mode(keys) if set(keys) <= _CLICK_KEYS else mode(())
    dim_mode = source if source in ("dims", "zoned", "edges") else None
    dim = dim_of(keys, aligned, scope.tz) if dim_mode else None
    source = "cached" if dim_mode else source
    any_cached = "cached" in (source, mode(()))
    full_where: tuple[str, ...] = ()
    edge_where: tuple[str, ...] | None = None
    day_params: dict[str, Any] = {}
    # The zoned dimension's cache rows: every UTC day the range touches, whole.
    wide = scope.utc_days()
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

    # A link's campaign and influencer never change (the registry cannot move a link), so
    # (link, day) is the pair and any() carries the link's campaign and influencer.
    def daily_sums(zoned: bool = False) -> Query:
        return Query(
            wide if zoned else scope, CLICKS_DAILY,
            (*_PAIR, "any(campaign_id) AS r_cmp", "any(influencer_id) AS r_inf", "sum(clicks) AS c",
             "sum(bot_clicks) AS b"),
            tuple(by_id) if zoned else (*by_id, *full_where), _PAIR,
            id_filters if zoned else {**id_filters, **day_params},
        )

    def cache_rows() -> Query:
        return Query(
            scope, DAILY_UNIQUES, (*_PAIR, "clicks AS cc", "uniques AS u"), (*by_id, *full_where), (),
            {**id_filters, **day_params},
        )

    def clicks(ks: tuple[str, ...]) -> tuple[Statement, ...]:
        m = mode(ks)
        if m in ("dims", "zoned", "edges"):
            key = str(dim).partition("@")[0]
            exprs = {**_CLICK_CACHED, "influencer": "influencer_id", "campaign": "campaign_id", key: "value"}
            where: tuple[str, ...] = (*by_id, "dim = {f_dim:String}")
            extra: dict[str, Any] = {"f_dim": dim}
            if m == "zoned":  # local labels sort as text: the range's own days or hours
                lo, hi = scope.date_from.isoformat(), scope.date_to.isoformat()
                where += ("value >= {f_lo:String} AND value <= {f_hi:String}",)
                extra.update(f_lo=lo, f_hi=hi + "T23:00" if key == "hour" else hi)
            elif m == "edges":
                where += full_where
                extra.update(day_params)
            rows = Query(
                wide if m == "zoned" else scope, DIM_UNIQUES,
                (*aliased(exprs, ks), "sum(clicks) AS clicks", "sum(bot_clicks) AS bot_clicks",
                 "sum(uniques) AS unique_clicks"),
                where, names(ks), {**id_filters, **extra},
            )
            if m != "edges" or edge_where is None:
                return (rows,)
            edges = link_days(
                {**_CLICK_BY_ID, key: _DIMS[key]}, ks, (*by_id, *edge_where), {**id_filters, **day_params}
            )
            return (rows, edges)
        if m == "cached":
            out: list[Statement] = []
            if full_days:
                out.append(Join(
                    daily_sums(), cache_rows(), _PAIR,
                    (*aliased(_CLICK_CACHED, ks), "sum(c) AS clicks", "sum(b) AS bot_clicks",
                     "sum(u) AS unique_clicks", "countIf(cc != c) AS stale"),
                    group_by=names(ks),
                ))
            if edge_where is not None:
                out.append(edge_days(ks, edge_where))
            return tuple(out)
        return (link_days(_CLICK_RAW, ks, tuple(by_code), filters),)

    def edge_days(ks: tuple[str, ...], where: tuple[str, ...]) -> Query:
        # The partial UTC days at the edges of a whole-hour zone's range, keyed like the cache.
        return link_days(_CLICK_BY_ID, ks, (*by_id, *where), {**id_filters, **day_params})

    def link_days(
        exprs: Mapping[str, str], ks: tuple[str, ...], where: tuple[str, ...], params: Mapping[str, Any]
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
        return Query(
            scope, CLICKS, inner, where, (*names(ks), "l_id", "u_day"), params,
            outer=(*names(ks), "sum(c) AS clicks", "sum(b) AS bot_clicks", "sum(u) AS unique_clicks"),
            outer_group_by=names(ks),
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
         f"sum({_NET}) AS revenue", "sum(commission) AS commission", "countIf(q_flagged) AS flagged_conversions",
         *_BY_STATUS),
        group_by=(*names(keys), "g_attributed"),
        more=tuple(more),
    )
    fees_allocated = params.link_code is None and set(keys) <= _FEE_KEYS
    fee_rows = fee_totals = None
    if params.link_code is None:
        if keys and set(keys) <= _FEE_KEYS:
            fee_rows = Query(
                scope, FEES, (*aliased(_FEE, keys), "sum(amount) AS fees"), tuple(common), names(keys), id_filters
            )
        else:
            fee_totals = Query(scope, FEES, ("sum(amount) AS fees",), tuple(common), (), id_filters)

    stale_days = refresh = None
    if any_cached and full_days:
        stale_days = Join(
            daily_sums(), cache_rows(), _PAIR, ("DISTINCT day",), where=("cc != c",)
        )
        refresh = Query(
            scope, CLICKS,
            ("{brand:String}", "toDate(ts, 'UTC') AS day", "link_id", "campaign_id", "influencer_id",
             "countIf(is_bot = 0)", "uniqExactIf(visitor_hash, is_bot = 0)", "now64(6)"),
            (*by_id, "toDate(ts, 'UTC') IN {f_days:Array(Date)}"),
            ("day", "link_id", "campaign_id", "influencer_id"), id_filters,
        )
    dim_stale = dim_refresh = None
    if dim is not None:
        zoned = dim_mode == "zoned"
        sc = wide if zoned else scope
        dim_params = {**id_filters, "f_dim": dim, **({"f_zone": scope.tz} if zoned else {})}
        days_where = full_where if dim_mode == "edges" else ()
        value_sums = Query(
            sc, DIM_UNIQUES, (*_PAIR, "sum(clicks) AS vc", "sum(bot_clicks) AS vb"),
            (*by_id, "dim = {f_dim:String}", *days_where), _PAIR,
            {**id_filters, "f_dim": dim, **(day_params if days_where else {})},
        )
        dim_stale = Join(daily_sums(zoned), value_sums, _PAIR, ("DISTINCT day",), where=("vc != c OR vb != b",))
        key = dim.partition("@")[0]
        dim_refresh = Query(
            sc, CLICKS,
            ("{brand:String}", "{f_dim:String}", "toDate(ts, 'UTC') AS day", "link_id",
             f"{_ZONED[key] if zoned else _DIMS[key]} AS value", "any(campaign_id)", "any(influencer_id)",
             "countIf(is_bot = 0)", "countIf(is_bot = 1)", "uniqExactIf(visitor_hash, is_bot = 0)", "now64(6)"),
            (*by_id, "toDate(ts, 'UTC') IN {f_days:Array(Date)}"), ("day", "link_id", "value"), dim_params,
        )
    return Plan(
        source=source,
        click_rows=clicks(keys) if keys and set(keys) <= _CLICK_KEYS else None,
        click_totals=None if additive else clicks(()),
        conversions=conversions,
        conversion_rows=conversion_rows,
        fees_allocated=fees_allocated,
        fee_rows=fee_rows,
        fee_totals=fee_totals,
        link_ids=link_ids if any_cached else None,
        stale_days=stale_days,
        refresh=refresh,
        dim_stale=dim_stale,
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

