"""Statements confined to one brand and one half-open time range: the gate every report query passes.

Every statement is a ``Query`` (or a ``Join`` of two), and a ``Query`` needs a ``Scope`` (one
brand and one half-open UTC time range, checked when the scope is made). Its SQL starts from
the gate condition (``brand_id = {brand:String}`` plus the table's time column inside the
range; registry tables, which have no time, get the brand alone), then the filters, each
bound server-side. Request data never reaches the SQL text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from tracker.core.errors import BadRequest, Unprocessable
from tracker.reports.params import zone


@dataclass(frozen=True)
class Scope:
    """One brand and one half-open UTC range [start, end): what every query is confined to."""

    brand_id: str
    date_from: date
    date_to: date
    tz: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.brand_id, str) or not self.brand_id:
            raise ValueError("A report scope needs a brand id.")
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.utcoffset() != timedelta(0):
                raise ValueError(f"A report scope needs a UTC {name} time.")
        if not self.start < self.end:
            raise ValueError("A report scope needs start < end.")
        if not isinstance(self.date_from, date) or not isinstance(self.date_to, date):
            raise ValueError("A report scope needs its dates.")

    @classmethod
    def of(cls, brand_id: str, date_from: date, date_to: date, tz: str, max_days: int) -> Scope:
        """The scope of dates ``date_from``..``date_to`` inclusive, local to ``tz``."""
        if date_to < date_from:
            raise BadRequest(f"'to' ({date_to}) is before 'from' ({date_from}).", code="bad_range")
        days = (date_to - date_from).days + 1
        if days > max_days:
            raise Unprocessable(
                f"The range {date_from} to {date_to} spans {days} days; the limit is {max_days}.",
                code="range_too_long",
            )
        zi = zone(tz)
        start = datetime.combine(date_from, time(0), zi).astimezone(UTC)
        end = datetime.combine(date_to + timedelta(days=1), time(0), zi).astimezone(UTC)
        return cls(brand_id, date_from, date_to, tz, start, end)

    def whole_hours(self) -> bool:
        """True when the zone's UTC offset is whole hours everywhere in the range."""
        zi = zone(self.tz)
        at = self.start
        while at <= self.end:
            offset = at.astimezone(zi).utcoffset() or timedelta(0)
            if offset % timedelta(hours=1):
                return False
            at += timedelta(hours=6)
        offset = self.end.astimezone(zi).utcoffset() or timedelta(0)
        return not offset % timedelta(hours=1)

    def utc_aligned(self) -> bool:
        """True when local days are UTC days over the whole range (offset 0 throughout)."""
        zi = zone(self.tz)
        at = self.start
        while at <= self.end:
            if at.astimezone(zi).utcoffset():
                return False
            at += timedelta(hours=6)
        return not self.end.astimezone(zi).utcoffset()

    def utc_days(self) -> Scope:
        """The same brand over every whole UTC day this range touches (at most a day more on each
        side): what a cache kept per UTC day is read and checked over."""
        last = (self.end - timedelta(microseconds=1)).date()
        first = self.start.date()
        return Scope(
            self.brand_id, first, last, "UTC", datetime.combine(first, time(0), UTC),
            datetime.combine(last + timedelta(days=1), time(0), UTC),
        )

    def parameters(self) -> dict[str, Any]:
        return {
            "brand": self.brand_id,
            "start": sql_time(self.start),
            "end": sql_time(self.end),
            "date_from": self.date_from,
            "date_to": self.date_to,
            "tz": self.tz,
        }


def sql_time(value: datetime) -> str:
    """A UTC instant as ClickHouse reads a DateTime64(3) parameter."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class Table:
    name: str
    final: bool
    time_column: str | None = None
    time_type: str | None = None


# Raw clicks without FINAL: ingest lands every click exactly once (it settles retried
# batches by click id), and the daily projection inside ``clicks`` counts the same rows, so
# counts from either source agree; distinct visitors ignore a duplicate anyway.
CLICKS = Table("clicks", False, "ts", "DateTime64(3, 'UTC')")
# The daily projection (migration 0023), read by a GROUP BY of its own expressions: gated by
# its UTC day. The view ``clicks_daily`` reads it too, but groups by all five of its keys
# first (~2x the time).
CLICKS_DAILY = Table("clicks", False, "toDate(ts, 'UTC')", "Date")
DAILY_UNIQUES = Table("report_daily_uniques", True, "day", "Date")
DIM_UNIQUES = Table("report_dim_uniques", True, "day", "Date")
CONVERSIONS = Table("conversions", True, "occurred_at", "DateTime64(3, 'UTC')")
FEES = Table("fees", True, "date", "Date")
INFLUENCERS = Table("influencers", True)
CAMPAIGNS = Table("campaigns", True)
LINKS = Table("links", True)
# Keyed by click id or order id, joined to the conversions of the range: gated by brand only.
CONVERSION_CLICKS = Table("conversion_clicks", True)
CONVERSION_FLAGS = Table("conversion_flags", True)
# Every order of the brand, whatever its time (a customer's first order may precede the range).
ALL_CONVERSIONS = Table("conversions", True)
# Read by the commission-status metrics (which conversions are paid: tracker.money.lifecycle).
PAYOUT_LINES = Table("payout_lines", True)
PAYOUT_EVENTS = Table("payout_events", True)
TABLES = (
    CLICKS, CLICKS_DAILY, DAILY_UNIQUES, DIM_UNIQUES, CONVERSIONS, FEES, INFLUENCERS, CAMPAIGNS, LINKS,
    CONVERSION_CLICKS, CONVERSION_FLAGS, ALL_CONVERSIONS, PAYOUT_LINES, PAYOUT_EVENTS,
)


def gate(scope: Scope, table: Table) -> str:
    """``FROM <table> WHERE <brand and range>``: the only place a table is named in a query."""
    if not isinstance(scope, Scope):
        raise TypeError("Every report query needs a Scope (brand and time range).")
    if table not in TABLES:
        raise ValueError(f"Table {table.name!r} is not a report table.")
    cond = "brand_id = {brand:String}"
    col, typ = table.time_column, table.time_type
    if col is not None and typ == "Date":
        cond += f" AND {col} >= {{date_from:Date}} AND {col} <= {{date_to:Date}}"
    elif col is not None:
        cond += f" AND {col} >= {{start:{typ}}} AND {col} < {{end:{typ}}}"
    return f"FROM {table.name}{' FINAL' if table.final else ''} WHERE {cond}"


def _check_params(scope: Scope, params: Mapping[str, Any]) -> None:
    clash = set(params) & set(scope.parameters())
    if clash:
        raise ValueError(f"Query parameters {sorted(clash)} would override the scope.")


@dataclass(frozen=True)
class Query:
    """One SELECT, confined by its scope. ``where`` holds extra conditions (bound parameters only).

    With ``outer`` set, the gated SELECT becomes a subquery: ``SELECT <outer> FROM (<inner>)
    [GROUP BY <outer_group_by>]`` (used to add up exact per-(link, UTC day) unique counts).
    """

    scope: Scope
    table: Table
    select: tuple[str, ...]
    where: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    outer: tuple[str, ...] = ()
    outer_group_by: tuple[str, ...] = ()
    settings: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.scope, Scope):
            raise TypeError("Every report query needs a Scope (brand and time range).")
        _check_params(self.scope, self.params)

    @property
    def sql(self) -> str:
        sql = f"SELECT {', '.join(self.select)} {gate(self.scope, self.table)}"
        for cond in self.where:
            sql += f" AND ({cond})"
        if self.group_by:
            sql += f" GROUP BY {', '.join(self.group_by)}"
        if self.outer:
            sql = f"SELECT {', '.join(self.outer)} FROM ({sql})"
            if self.outer_group_by:
                sql += f" GROUP BY {', '.join(self.outer_group_by)}"
        return sql

    @property
    def parameters(self) -> dict[str, Any]:
        return {**self.scope.parameters(), **self.params}

    def with_params(self, **params: Any) -> Query:
        return Query(
            self.scope, self.table, self.select, self.where, self.group_by, {**self.params, **params},
            self.outer, self.outer_group_by, self.settings,
        )


@dataclass(frozen=True)
class Join:
    """``SELECT <select> FROM (<left>) AS r LEFT JOIN (<right>) AS d USING (...)``: two gated
    queries of the same scope; ``more`` adds further ``LEFT JOIN (<query>) AS d<n> USING (...)``."""

    left: Query
    right: Query
    using: tuple[str, ...]
    select: tuple[str, ...]
    where: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()
    more: tuple[tuple[Query, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        rights = (self.right, *(q for q, _ in self.more))
        if not isinstance(self.left, Query) or not all(isinstance(q, Query) for q in rights):
            raise TypeError("A join joins Query objects only.")
        if any(q.scope != self.left.scope for q in rights):
            raise ValueError("A join needs both sides in the same scope.")

    @property
    def scope(self) -> Scope:
        return self.left.scope

    @property
    def sql(self) -> str:
        sql = (
            f"SELECT {', '.join(self.select)} FROM ({self.left.sql}) AS r "
            f"LEFT JOIN ({self.right.sql}) AS d USING ({', '.join(self.using)})"
        )
        for n, (query, using) in enumerate(self.more, start=2):
            sql += f" LEFT JOIN ({query.sql}) AS d{n} USING ({', '.join(using)})"
        if self.where:
            sql += " WHERE " + " AND ".join(f"({c})" for c in self.where)
        if self.group_by:
            sql += f" GROUP BY {', '.join(self.group_by)}"
        return sql

    @property
    def parameters(self) -> dict[str, Any]:
        out = {**self.left.parameters, **self.right.parameters}
        for query, _ in self.more:
            out.update(query.parameters)
        return out

    @property
    def settings(self) -> Mapping[str, int]:
        return self.left.settings

    def with_params(self, **params: Any) -> Join:
        return Join(
            self.left.with_params(**params), self.right.with_params(**params), self.using, self.select,
            self.where, self.group_by, tuple((q.with_params(**params), u) for q, u in self.more),
        )


Statement = Query | Join


@dataclass(frozen=True)
class CacheRead:
    """Cached click counts and what checks them, per UTC day (``u_day``), before they are believed.

    ``clicks`` (the daily rollup, ``CLICKS_DAILY``) gives each day's clicks and bot clicks; ``uniques``
    (``report_daily_uniques``) each day's clicks its unique counts were computed with; ``dims``
    (``report_dim_uniques``) each day's clicks and bot clicks its values add up to. A day is
    stale where these differ (over ``full`` for the unique counts, over ``dim_days`` for the
    dimension). Rows grouped by the report's keys come from ``clicks`` + ``uniques``
    (``rows == "daily"``) or from ``dims`` (``rows == "dims"``; local labels outside ``labels``
    dropped); ``totals``: the totals' clicks are the sums over ``full``.
    """

    clicks: Query
    uniques: Query
    dims: Query | None
    full: tuple[date, date] | None
    dim_days: tuple[date, date] | None
    rows: str | None
    totals: bool
    labels: tuple[str, str] | None = None
