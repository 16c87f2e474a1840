"""Which statements answer which report: the click source, totals, fees, conversions."""

from __future__ import annotations

import pytest

from tests.reports.dataset import (
    BRAND,
    D_FROM,
    D_TO,
)
from tracker.reports.params import ReportParams
from tracker.reports.plan import plan
from tracker.reports.sql import CLICKS, CLICKS_DAILY, DAILY_UNIQUES, DIM_UNIQUES, Query, Scope


@pytest.mark.parametrize(
    ("tz", "group_by", "source"),
    [
        ("UTC", ("influencer",), "cached"),
        ("UTC", ("day", "link"), "cached"),
        ("UTC", (), "cached"),
        ("Europe/London", ("campaign", "day"), "cached"),  # GMT in November
        ("UTC", ("hour",), "cached"),  # the dimension cache
        ("UTC", ("hour", "country"), "raw"),  # two dimensions
        ("America/New_York", ("day",), "cached"),  # the dimension day@America/New_York
        ("America/New_York", ("day", "country"), "raw"),  # two dimensions
        ("America/New_York", ("influencer",), "cached"),  # full UTC days cached, edge days merged
        ("Asia/Tokyo", ("campaign", "link"), "cached"),
        ("Asia/Tokyo", ("hour", "link"), "cached"),  # hour@Asia/Tokyo beside the link
        ("Asia/Tokyo", ("hour", "day"), "raw"),
        ("Asia/Kolkata", ("influencer",), "cached"),  # half-hour zones too: edges are raw either way
        ("Australia/Lord_Howe", ("day",), "cached"),  # +11:00 in its summer
        ("UTC", ("country",), "cached"),
        ("UTC", ("device", "day"), "cached"),
        ("UTC", ("referer", "influencer"), "cached"),
        ("Asia/Tokyo", ("country",), "cached"),  # full UTC days from the cache, edge days raw
        ("Asia/Tokyo", ("country", "day"), "raw"),
    ],
)
def test_source_choice(tz: str, group_by: tuple[str, ...], source: str) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400)
    assert plan(scope, ReportParams(D_FROM, D_TO, group_by, tz)).source == source




@pytest.mark.parametrize(
    ("tz", "group_by", "rows_source"),
    [("UTC", ("country", "device"), "raw"), ("America/New_York", ("day", "device"), "raw"),
     ("Asia/Tokyo", ("hour", "country"), "raw")],
)
def test_totals_use_the_cache_when_the_rows_cannot(tz: str, group_by: tuple[str, ...], rows_source: str) -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, tz, 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, tz))
    assert p.source == rows_source
    assert p.click_rows and all(q.table is CLICKS for q in p.click_rows)
    assert p.click_totals is not None
    assert p.cache is not None and p.cache.totals and p.cache.rows is None
    assert (p.cache.clicks.table, p.cache.uniques.table) == (CLICKS_DAILY, DAILY_UNIQUES)
    assert p.refresh is not None and p.dim_refresh is None


@pytest.mark.parametrize(
    ("group_by", "filters", "conversion_rows", "fee_rows", "fee_totals", "allocated"),
    [
        ((), {}, False, False, True, True),
        (("influencer",), {}, True, True, False, True),
        (("campaign", "day"), {}, True, True, False, True),
        (("link",), {}, True, False, True, False),  # a fee belongs to no link: totals only
        (("hour",), {}, True, False, True, False),
        (("country",), {}, True, False, True, False),  # conversions carry their click's country
        (("device", "day"), {}, True, False, True, False),
        (("coupon",), {}, True, False, True, False),
        (("influencer", "customer"), {}, True, False, True, False),
        (("influencer",), {"link_code": "abc123"}, True, False, False, False),  # no fee is one link's
        (("influencer",), {"campaign_id": "cmp_a"}, True, True, False, True),
    ],
)
def test_conversions_and_fees_by_grouping(
    group_by: tuple[str, ...], filters: dict[str, str], conversion_rows: bool, fee_rows: bool, fee_totals: bool,
    allocated: bool,
) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, "UTC", 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, "UTC", **filters))
    assert (p.conversion_rows, p.fee_rows is not None, p.fee_totals is not None, p.fees_allocated) == (
        conversion_rows, fee_rows, fee_totals, allocated,
    )
    grouped = [f"g_{k}" for k in group_by] if conversion_rows else []
    assert p.conversions.group_by == (*grouped, "g_attributed")


@pytest.mark.parametrize(
    ("group_by", "joins"),
    [((), ()), (("country",), ("conversion_clicks",)), (("customer",), ("conversions",)),
     (("utm_source", "customer"), ("conversion_clicks", "conversions"))],
)
def test_conversions_join_click_facts_and_first_orders_only_when_grouped_by_them(
    group_by: tuple[str, ...], joins: tuple[str, ...]
) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, "UTC", 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, "UTC"))
    assert p.conversions.right.table.name == "conversion_flags"
    assert tuple(q.table.name for q, _ in p.conversions.more) == joins


@pytest.mark.parametrize("group_by", [("coupon",), ("status", "store"), ("attribution",), ("customer",)])
def test_clicks_know_no_conversion_keys_so_they_are_in_the_totals_only(group_by: tuple[str, ...]) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, "UTC", 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, "UTC"))
    assert p.click_rows is None and p.click_totals is not None
    assert p.cache is not None and p.cache.totals and p.cache.rows is None
    assert p.source == "cached"


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Tokyo"])
@pytest.mark.parametrize("group_by", [(), ("influencer",), ("link",), ("day",), ("hour",), ("country",)], ids=str)
def test_without_the_cache_every_click_query_reads_raw_clicks(tz: str, group_by: tuple[str, ...]) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, tz), allow_cache=False)
    clicks = [*(p.click_rows or ()), *(p.click_totals or ())]
    assert clicks and all(isinstance(q, Query) and q.table is CLICKS for q in clicks)
    assert (p.source, p.link_ids, p.cache, p.refresh, p.dim_refresh) == ("raw", None, None, None, None)


@pytest.mark.parametrize(
    ("group_by", "tz", "totals_queried"),
    [
        (("influencer",), "UTC", False),  # every click in one row: totals add up
        (("campaign", "day"), "UTC", False),
        (("day",), "America/New_York", True),  # a visitor's UTC day spans two local days
        (("hour",), "UTC", True),
        (("country",), "UTC", True),
        ((), "UTC", True),
    ],
)
def test_totals_are_added_up_only_when_rows_partition_the_clicks(
    group_by: tuple[str, ...], tz: str, totals_queried: bool
) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, tz))
    assert (p.click_totals is not None) is totals_queried
    assert p.cache is not None and p.cache.totals is totals_queried
    assert (p.click_rows is None) is (group_by == ())


@pytest.mark.parametrize(
    ("tz", "group_by", "rows", "labels", "edges"),
    [
        ("UTC", ("influencer",), "daily", None, False),
        ("UTC", ("day", "link"), "daily", None, False),
        ("America/New_York", ("campaign",), "daily", None, True),  # edge days from raw clicks
        ("UTC", ("hour",), "dims", None, False),
        ("UTC", ("device", "day"), "dims", None, False),
        ("America/New_York", ("hour",), "dims", ("2026-10-30", "2026-11-02T23:00"), False),  # hour@zone
        ("Asia/Tokyo", ("country",), "dims", None, True),
    ],
)
def test_cached_rows_and_their_per_day_checks_come_from_one_read_per_table(
    tz: str, group_by: tuple[str, ...], rows: str, labels: tuple[str, str] | None, edges: bool
) -> None:
    scope = Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400)
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, tz))
    assert p.cache is not None and p.cache.rows == rows and p.cache.labels == labels
    assert (p.cache.clicks.table, p.cache.uniques.table) == (CLICKS_DAILY, DAILY_UNIQUES)
    assert (p.cache.dims is not None and p.cache.dims.table) == (DIM_UNIQUES if rows == "dims" else False)
    assert bool(p.click_rows) is edges
    if edges and rows == "dims":  # the raw edge rows carry the totals' edge share (every key NULL)
        assert p.click_rows is not None and "GROUPING SETS" in p.click_rows[0].sql and p.click_totals == ()
    # Every cached read also gives each UTC day's sums: a grouping set beside the keys, or the day key itself.
    for q in (p.cache.clicks, p.cache.uniques, p.cache.dims):
        if q is not None:
            assert "u_day" in q.sql or "day AS g_day" in q.sql
