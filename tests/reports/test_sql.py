"""The gate: no statement without a brand and a half-open time range; values only as parameters."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from tests.reports.dataset import (
    D_FROM,
    D_TO,
)
from tracker.core.errors import BadRequest, Unprocessable
from tracker.reports import sql
from tracker.reports.params import GROUP_KEYS, ReportParams
from tracker.reports.plan import plan
from tracker.reports.run import refresh_uniques
from tracker.reports.sql import (
    CAMPAIGNS,
    CLICKS,
    CLICKS_DAILY,
    CONVERSIONS,
    DAILY_UNIQUES,
    FEES,
    INFLUENCERS,
    LINKS,
    TABLES,
    Join,
    Query,
    Scope,
    Table,
    gate,
    sql_time,
)
from tracker.storage.clickhouse import ClickHouse


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
        Query(scope, CLICKS, ("count()",))
    with pytest.raises(TypeError):
        gate(scope, CLICKS)


def test_a_query_cannot_override_the_scope_parameters() -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, "UTC", 400)
    with pytest.raises(ValueError, match="override"):
        Query(scope, CLICKS, ("count()",), params={"brand": "brd_other"})


def test_only_the_gate_names_a_table() -> None:
    """The reports package has exactly one place that writes ``FROM <table>``: the gate."""
    sources = {p.name: p.read_text() for p in Path(sql.__file__).parent.glob("*.py")}
    assert {"sql.py", "plan.py", "run.py", "params.py", "routes.py"} <= set(sources)
    assert sum(len(re.findall(r"FROM \{table", text)) for text in sources.values()) == 1
    assert len(re.findall(r"FROM \{table", sources["sql.py"])) == 1
    for text in sources.values():
        assert re.findall(r"FROM [a-z_]", text) == []


ALL_GROUPINGS = [(), *[(k,) for k in GROUP_KEYS], ("influencer", "day"), ("link", "country", "hour")]


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
    p = plan(scope, ReportParams(D_FROM, D_TO, group_by, tz, **filters), allow_cache=allow_cache)
    statements = [q for q in vars(p).values() if isinstance(q, Query | Join)]
    for part in (p.click_rows, p.click_totals):
        statements += list(part or ())
    if p.cache is not None:
        statements += [q for q in (p.cache.clicks, p.cache.uniques, p.cache.dims) if q is not None]
    assert p.conversions in statements
    assert p.click_rows or p.click_totals or p.cache
    for q in statements:
        text = q.sql
        tables = re.findall(r"FROM (\w+)", text)
        assert tables
        for name in set(tables):
            # A table may be read in the range and as a whole (a customer's first order: every order).
            gates = [gate(scope, t) for t in TABLES if t.name == name]
            for table in (t for t in TABLES if t.name == name):
                gate_sql = gate(scope, table)
                assert gate_sql.startswith(f"FROM {name}") and "WHERE brand_id = {brand:String}" in gate_sql
                if table.time_column is not None:
                    col = re.escape(table.time_column)  # a column or an expression of one
                    brand_then_start = rf"WHERE brand_id = \{{brand:String\}} AND {col} >= \{{(start|date_from):"
                    assert re.search(brand_then_start, gate_sql)
                    assert re.search(rf"AND {col} <=? \{{(end|date_to):", gate_sql)
            # Every mention of the table is a whole gate: brand first, then the range (if it has one).
            for m in re.finditer(rf"FROM {name} ", text):
                assert any(text.startswith(g, m.start()) for g in gates), text[m.start():m.start() + 200]
        # Request values appear only as parameters.
        for value in filters.values():
            assert value not in text
        assert q.parameters["brand"] == "brd_x"
        # The range, or (a cache kept per UTC day, in another zone) the whole UTC days it touches.
        assert q.parameters["start"] in (sql_time(scope.start), sql_time(scope.utc_days().start))
        assert q.parameters["end"] in (sql_time(scope.end), sql_time(scope.utc_days().end))


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        ("UTC", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)),
        ("Asia/Tokyo", datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("Asia/Kolkata", datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_a_scope_widened_to_the_utc_days_it_touches(tz: str, start: datetime, end: datetime) -> None:
    scope = Scope.of("brd_x", date(2026, 11, 1), date(2026, 11, 30), tz, 400)
    wide = scope.utc_days()
    assert (wide.brand_id, wide.start, wide.end, wide.tz) == ("brd_x", start, end, "UTC")
    assert (wide.date_from, wide.date_to) == (start.date(), (end - timedelta(days=1)).date())
    assert wide.start <= scope.start and scope.end <= wide.end


def test_a_join_needs_one_scope() -> None:
    a = Scope.of("brd_a", D_FROM, D_TO, "UTC", 400)
    b = Scope.of("brd_b", D_FROM, D_TO, "UTC", 400)
    with pytest.raises(ValueError, match="same scope"):
        Join(Query(a, CLICKS, ("1",)), Query(b, CLICKS, ("1",)), ("x",), ("1",))
    with pytest.raises(TypeError):
        Join("SELECT 1", Query(b, CLICKS, ("1",)), ("x",), ("1",))  # type: ignore[arg-type]


def test_the_cache_is_filled_from_a_gated_clicks_query_only() -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, "UTC", 400)
    untouched = cast(ClickHouse, object())  # refused before ClickHouse is used
    with pytest.raises(TypeError):
        refresh_uniques(untouched, Query(scope, CLICKS_DAILY, ("1",)))
    with pytest.raises(TypeError):
        refresh_uniques(untouched, "SELECT 1")  # type: ignore[arg-type]




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




@pytest.mark.parametrize(
    ("table", "gated"),
    [
        (CLICKS, "FROM clicks WHERE brand_id = {brand:String} AND ts >= {start:DateTime64(3, 'UTC')} "
                 "AND ts < {end:DateTime64(3, 'UTC')}"),
        (CLICKS_DAILY, "FROM clicks WHERE brand_id = {brand:String} AND toDate(ts, 'UTC') >= {date_from:Date} "
                       "AND toDate(ts, 'UTC') <= {date_to:Date}"),
        (DAILY_UNIQUES, "FROM report_daily_uniques FINAL WHERE brand_id = {brand:String} "
                        "AND day >= {date_from:Date} AND day <= {date_to:Date}"),
        (CONVERSIONS, "FROM conversions FINAL WHERE brand_id = {brand:String} AND occurred_at >= "
                      "{start:DateTime64(3, 'UTC')} AND occurred_at < {end:DateTime64(3, 'UTC')}"),
        (FEES, "FROM fees FINAL WHERE brand_id = {brand:String} AND date >= {date_from:Date} "
               "AND date <= {date_to:Date}"),
        (INFLUENCERS, "FROM influencers FINAL WHERE brand_id = {brand:String}"),
        (CAMPAIGNS, "FROM campaigns FINAL WHERE brand_id = {brand:String}"),
        (LINKS, "FROM links FINAL WHERE brand_id = {brand:String}"),
    ],
    ids=lambda v: v.name if isinstance(v, Table) else "",
)
def test_the_gate_of_every_table(table: Table, gated: str) -> None:
    assert gate(Scope.of("brd_x", D_FROM, D_TO, "UTC", 400), table) == gated
    assert table in TABLES


def test_the_gate_knows_only_report_tables() -> None:
    with pytest.raises(ValueError, match="not a report table"):
        gate(Scope.of("brd_x", D_FROM, D_TO, "UTC", 400), Table("api_keys", True))


def test_scope_parameters_are_the_range_in_utc() -> None:
    scope = Scope.of("brd_x", date(2026, 11, 1), date(2026, 11, 1), "Asia/Kolkata", 400)
    assert scope.parameters() == {
        "brand": "brd_x",
        "start": "2026-10-31 18:30:00.000",
        "end": "2026-11-01 18:30:00.000",
        "date_from": date(2026, 11, 1),
        "date_to": date(2026, 11, 1),
        "tz": "Asia/Kolkata",
    }


def test_statements_keep_their_scope_and_bind_values() -> None:
    scope = Scope.of("brd_x", D_FROM, D_TO, "UTC", 400)
    q = Query(scope, CLICKS, ("count() AS c",), ("link_code = {f_link:String}",), ("country",), {"f_link": "x'--"})
    assert q.sql == f"SELECT count() AS c {gate(scope, CLICKS)} AND (link_code = {{f_link:String}}) GROUP BY country"
    bound = q.with_params(f_days=[D_FROM])
    assert bound.scope == scope and bound.sql == q.sql
    assert bound.parameters == {**scope.parameters(), "f_link": "x'--", "f_days": [D_FROM]}
    with pytest.raises(ValueError, match="override"):
        q.with_params(start="2000-01-01 00:00:00.000")
    outer = Query(scope, CLICKS, ("count() AS c",), outer=("sum(c) AS total",))
    assert outer.sql == f"SELECT sum(c) AS total FROM (SELECT count() AS c {gate(scope, CLICKS)})"
    joined = Join(q, outer, ("c",), ("c",), where=("c > 0",), group_by=("c",))
    assert joined.sql.startswith(f"SELECT c FROM ({q.sql}) AS r LEFT JOIN ({outer.sql}) AS d USING (c)")
    assert joined.sql.endswith(" WHERE (c > 0) GROUP BY c")
    assert joined.with_params(f_x=1).parameters["f_x"] == 1
