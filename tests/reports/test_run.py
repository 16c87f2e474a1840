"""Reports against the oracle (``tests/reports/oracle.py``): every metric, grouping, zone and filter.

One data set (``tests/reports/dataset.py``) per module; each report is compared metric by metric
with ``expected()``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import jsonschema_rs
import pytest

from tests.reports.dataset import (
    BRAND,
    D_FROM,
    D_TO,
    LINKS,
    OTHER,
    T0,
    Data,
    add_clicks,
    build_data,
    fill_facts,
    insert_clicks,
    load,
    make_click,
    run,
)
from tests.reports.oracle import check
from tracker.reports import run as reports
from tracker.reports.answer import money_ratio
from tracker.reports.params import GROUP_KEYS, ReportParams
from tracker.reports.plan import plan
from tracker.reports.run import (
    KEY_FIELDS,
    METRICS,
    TOTAL_METRICS,
    Report,
    ReportAnswer,
    ReportRow,
    money_str,
    ratio,
    run_report,
)
from tracker.reports.sql import Scope
from tracker.storage.clickhouse import ClickHouse

# --------------------------------------------------------------------------- exactness

TZS = ("UTC", "America/New_York", "Asia/Kolkata", "Asia/Tokyo")
GROUPINGS = (
    (),
    ("influencer",),
    ("campaign",),
    ("link",),
    ("day",),
    ("hour",),
    ("country",),
    ("device",),
    ("influencer", "day"),
    ("campaign", "influencer"),
    ("link", "hour"),
    ("country", "device"),
    ("day", "device"),
    ("utm_source",),
    ("utm_medium", "utm_campaign"),
    ("referer", "influencer"),
    ("coupon",),
    ("attribution", "day"),
    ("store", "status"),
    ("customer",),
    ("customer", "country"),
    ("influencer", "coupon", "hour"),
)


@pytest.mark.parametrize("tz", TZS)
@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: ",".join(g) or "none")
def test_every_metric_matches_the_events(loaded: ClickHouse, data: Data, group_by: tuple[str, ...], tz: str) -> None:
    report = run(loaded, BRAND, group_by=group_by, tz=tz)
    check(report, data, BRAND["id"], report.params)
    if group_by:
        assert report.rows
    # The bytes sent are the answer model's, though the rows are not validated again to send them.
    assert report.json_bytes() == report.answer().dump_json()


def test_reports_at_once_answer_as_one_at_a_time(loaded: ClickHouse) -> None:
    # Many reports' statements share the pool's clients: none may read another's result.
    in_turn = ClickHouse(loaded.client, loaded.database)  # no opener: each statement runs in place, in order
    cases = [(g, tz) for g in GROUPINGS[:8] for tz in TZS[:2]]
    expected = [run(in_turn, BRAND, group_by=g, tz=tz).json_bytes() for g, tz in cases]
    with ThreadPoolExecutor(4) as requests:
        got = list(requests.map(lambda case: run(loaded, BRAND, group_by=case[0], tz=case[1]).json_bytes(), cases))
    assert got == expected


@pytest.mark.parametrize(
    ("filters", "group_by", "tz"),
    [
        ({"campaign_id": "cmp_summer0001"}, ("influencer",), "UTC"),
        ({"campaign_id": "cmp_winter0002"}, ("day",), "Asia/Kolkata"),
        ({"influencer_id": "inf_alice00001"}, ("campaign", "day"), "America/New_York"),
        ({"link_code": "bbbbbb"}, ("day",), "UTC"),
        ({"link_code": "cccccc"}, ("influencer",), "Asia/Kolkata"),
        ({"link_code": "nosuch"}, ("day",), "UTC"),
        ({"campaign_id": "cmp_summer0001", "influencer_id": "inf_bob0000002"}, ("hour",), "Asia/Tokyo"),
        ({"campaign_id": "cmp_nosuch0009"}, (), "UTC"),
    ],
)
def test_filters(loaded: ClickHouse, data: Data, filters: dict[str, str], group_by: tuple[str, ...], tz: str) -> None:
    report = run(loaded, BRAND, group_by=group_by, tz=tz, **filters)
    check(report, data, BRAND["id"], report.params)


@pytest.mark.parametrize(
    ("d_from", "d_to"),
    [
        (date(2026, 11, 1), date(2026, 11, 1)),
        (date(2026, 10, 1), date(2026, 10, 28)),  # nothing there
        (date(2026, 10, 25), date(2026, 11, 10)),
    ],
)
@pytest.mark.parametrize("group_by", [("influencer", "day"), ("influencer",), ("link",), ()], ids=str)
@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo", "UTC"])
def test_ranges(
    loaded: ClickHouse, data: Data, d_from: date, d_to: date, group_by: tuple[str, ...], tz: str
) -> None:
    report = run(loaded, BRAND, group_by=group_by, date_from=d_from, date_to=d_to, tz=tz)
    check(report, data, BRAND["id"], report.params)


def test_the_other_brand_sees_only_its_own(loaded: ClickHouse, data: Data) -> None:
    report = run(loaded, OTHER, group_by=("link",))
    check(report, data, OTHER["id"], report.params)
    assert [r["link_code"] for r in report.rows] == ["zzzzzz"]


def test_rows_carry_names_and_current_versions(loaded: ClickHouse) -> None:
    report = run(loaded, BRAND, group_by=("influencer", "campaign"))
    names = {(r["influencer_name"], r["campaign_name"]) for r in report.rows}
    assert ("Alice", "Summer") in names
    assert all("(old)" not in n for n, _ in names)




@pytest.mark.parametrize(
    ("group_by", "tz"),
    [
        (("hour",), "UTC"), (("country",), "UTC"), (("link", "device"), "UTC"), (("utm_campaign", "day"), "UTC"),
        (("day",), "America/New_York"), (("hour", "link"), "Asia/Kolkata"), (("country",), "Asia/Tokyo"),
        (("influencer", "referer"), "America/New_York"),
    ],
    ids=str,
)
def test_the_dimension_cache_follows_new_clicks_and_is_never_believed_when_off(
    ch: ClickHouse, group_by: tuple[str, ...], tz: str
) -> None:
    """Cached (link, day, value) counts are checked against the daily rollup's counts on every read."""
    data = build_data(seed=17)
    load(ch, data)
    fill_facts(ch)
    params = ReportParams(D_FROM, D_TO, group_by, tz)
    p = plan(Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400), params)
    assert p.source == "cached" and p.cache is not None and p.cache.dims is not None
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)
    assert ch.query("SELECT count() FROM report_dim_uniques")[0][0] > 0
    # More clicks (bots too) on a day already cached, from visitors already seen and new ones.
    rng = random.Random(3)
    more = [make_click(rng, 800_000 + i, BRAND["id"], (102, *LINKS[102]), datetime(2026, 11, 1, 9, i, tzinfo=UTC))
            for i in range(30)]
    add_clicks(ch, data, more)
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)
    # Rows whose counts do not add up are recomputed, never believed.
    ch.command(
        "INSERT INTO report_dim_uniques SELECT brand_id, dim, day, link_id, value, campaign_id, influencer_id, "
        "clicks + 1, bot_clicks, 999999, now64(6) FROM report_dim_uniques FINAL"
    )
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)


@pytest.mark.parametrize(("group_by", "tz"), [((), "UTC"), (("influencer",), "UTC"), (("campaign", "day"), "UTC"),
                                              (("coupon",), "Asia/Kolkata")], ids=str)
def test_sums_beyond_64_bits_of_units_stay_exact(ch: ClickHouse, group_by: tuple[str, ...], tz: str) -> None:
    """Money sums leave ClickHouse as 64-bit units plus what lies beyond: groups summing to more
    than 9.2 * 10^14 currency units (2^63 units of 0.0001) are exact to the last unit."""
    data = build_data(seed=19)
    scale = Decimal(4 * 10**11)  # the largest amount, 200.00, becomes 8 * 10^13: a column holds < 10^14
    for history in data.orders.values():
        for version in history:
            for name, odd in (("amount", "0.0007"), ("original_amount", "0.0007"), ("commission", "0.0003")):
                version[name] = version[name] * scale + Decimal(odd)
            for name in ("refunded_amount", "original_refunded_amount"):
                version[name] = version[name] * scale
    load(ch, data)
    report = run(ch, BRAND, group_by=group_by, tz=tz)
    check(report, data, BRAND["id"], report.params)
    assert Decimal(report.totals["revenue"]) > 2**63 / Decimal(10**4)


def test_the_cache_follows_new_clicks(ch: ClickHouse) -> None:
    """Cached daily uniques are checked against the daily rollup's click count on every read."""
    data = build_data(seed=11)
    load(ch, data)
    params = ReportParams(D_FROM, D_TO, ("influencer", "day"), "UTC")
    first = run_report(ch, BRAND, params, 400)
    assert first.source == "cached"
    check(first, data, BRAND["id"], params)
    cached = ch.query("SELECT count() FROM report_daily_uniques")[0][0]
    assert cached > 0
    # More clicks on days already cached, from visitors already seen and new ones.
    rng = random.Random(5)
    more = [
        make_click(rng, 900_000 + i, BRAND["id"], (101, *LINKS[101]), datetime(2026, 10, 31, 12, i, tzinfo=UTC))
        for i in range(40)
    ]
    add_clicks(ch, data, more)
    second = run_report(ch, BRAND, params, 400)
    check(second, data, BRAND["id"], params)
    assert second.rows != first.rows
    # A cache row whose count does not match is never believed.
    ch.command(
        "INSERT INTO report_daily_uniques SELECT brand_id, day, link_id, campaign_id, influencer_id, "
        "clicks + 1, 999999, now64(6) FROM report_daily_uniques FINAL"
    )
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)


@pytest.mark.parametrize(("group_by", "tz"), [(("link",), "UTC"), ((), "UTC"), (("country",), "UTC"),
                                              (("hour",), "America/New_York")], ids=str)
def test_a_day_is_checked_whole_so_a_link_missing_from_the_cache_is_recomputed(
    ch: ClickHouse, group_by: tuple[str, ...], tz: str
) -> None:
    """The caches are checked per UTC day: one (link, day) short is enough to recompute the day."""
    data = build_data(seed=17)
    load(ch, data)
    fill_facts(ch)
    params = ReportParams(D_FROM, D_TO, group_by, tz)
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)
    day_links = ch.query("SELECT day, link_id FROM report_daily_uniques FINAL WHERE brand_id = {b:String} "
                         "AND clicks > 0 ORDER BY day, link_id LIMIT 1", {"b": BRAND["id"]})
    assert day_links
    day, link = day_links[0]
    for table in ("report_daily_uniques", "report_dim_uniques"):
        ch.command(f"ALTER TABLE {table} DELETE WHERE day = {{d:Date}} AND link_id = {{l:UInt64}} "
                   "SETTINGS mutations_sync = 2", {"d": day, "l": link})
    # A click on another link of that day too: the day's sums now differ both ways.
    rng = random.Random(7)
    other = next(i for i in LINKS if i != link)
    more = [make_click(rng, 700_000 + i, BRAND["id"], (other, *LINKS[other]),
                       datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12, minutes=i))
            for i in range(3)]
    add_clicks(ch, data, more)
    check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)


def test_without_cache_rounds_the_visitor_sets_answer(ch: ClickHouse, monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_data(seed=13)
    load(ch, data)
    monkeypatch.setattr(reports, "_REFRESH_ROUNDS", 0)
    for group_by, tz in [((), "UTC"), (("link",), "UTC"), (("campaign", "day"), "UTC"),
                         (("influencer",), "America/New_York"), ((), "Asia/Tokyo")]:
        params = ReportParams(D_FROM, D_TO, group_by, tz)
        assert plan(Scope.of(BRAND["id"], D_FROM, D_TO, tz, 400), params).source == "cached"
        check(run_report(ch, BRAND, params, 400), data, BRAND["id"], params)
    assert ch.query("SELECT count() FROM report_daily_uniques")[0][0] == 0


def test_money_and_ratio_formats() -> None:
    assert money_str(Decimal("49.9000"), "USD") == "49.90"
    assert money_str(Decimal("12.3450"), "USD") == "12.35"  # half-up to the minor unit
    assert money_str(Decimal("12.3449"), "USD") == "12.34"
    assert money_str(Decimal("-0.005"), "USD") == "-0.01"
    assert money_str(Decimal("100.5"), "JPY") == "101"
    assert money_str(Decimal("0.0005"), "KWD") == "0.001"
    assert money_ratio(Decimal(10), Decimal(3), "USD") == "3.33"
    assert money_ratio(Decimal("20.01"), Decimal(2), "USD") == "10.01"  # 10.005: the exact quotient, then rounded
    assert money_ratio(Decimal(1), Decimal(0), "USD") is None
    assert money_str(Decimal("0E-4"), "USD") == "0.00"
    assert money_str(Decimal("100"), "JPY") == "100"
    assert money_str(Decimal("1500.0000"), "KWD") == "1500.000"
    assert ratio(Decimal(1), Decimal(3)) == "0.333333"
    assert ratio(Decimal(2), Decimal(3)) == "0.666667"
    assert ratio(Decimal(-1), Decimal(8)) == "-0.125000"
    assert ratio(Decimal(1), Decimal(0)) is None


def test_csv_matches_json(loaded: ClickHouse) -> None:

    report = run(loaded, BRAND, group_by=("influencer", "day"), tz="Asia/Kolkata")
    lines = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(lines) == len(report.rows) + 1
    for line, row in zip(lines, report.rows, strict=False):
        assert line["type"] == "row"
        assert {k: v for k, v in line.items() if k in row} == {k: "" if v is None else str(v) for k, v in row.items()}
    assert lines[-1]["type"] == "total"
    assert {k: lines[-1][k] for k in report.totals} == {
        k: "" if v is None else str(v) for k, v in report.totals.items()
    }




def test_a_retried_ingest_block_counts_once_in_the_daily_rollup(ch: ClickHouse) -> None:
    rng = random.Random(3)
    block = [make_click(rng, i, BRAND["id"], (101, *LINKS[101]), T0 + timedelta(minutes=i)) for i in range(50)]
    for _ in range(2):
        insert_clicks(ch, block, dedup_token="batch-1")
    daily = ch.query("SELECT sum(clicks) + sum(bot_clicks) FROM clicks_daily")[0][0]
    raw = ch.query("SELECT count() FROM clicks")[0][0]
    assert daily == raw == 50



# --------------------------------------------------------------------------- the answer


@pytest.mark.parametrize(
    ("group_by", "tz"),
    [((), "UTC"), (("influencer", "day"), "Asia/Kolkata"), (("link", "hour"), "UTC"), (("country", "device"), "UTC")],
    ids=str,
)
def test_the_answer_is_its_model(loaded: ClickHouse, group_by: tuple[str, ...], tz: str) -> None:
    report = run(loaded, BRAND, group_by=group_by, tz=tz)
    body = report.to_json()
    assert report.json_bytes() == report.answer().dump_json()
    assert json.loads(report.json_bytes()) == body
    schema = jsonschema_rs.validator_for(ReportAnswer.model_json_schema(mode="serialization"))
    schema.validate(body)
    keys = {f for k in group_by for f in KEY_FIELDS[k]}
    assert all(set(row) == keys | set(METRICS) for row in body["rows"])
    assert set(body["totals"]) == set(TOTAL_METRICS)
    assert body["meta"] == {
        "from": D_FROM.isoformat(), "to": D_TO.isoformat(), "tz": tz, "group_by": list(group_by),
        "currency": "USD", "source": report.source,
    }


def test_every_group_key_has_its_answer_fields() -> None:
    assert set(KEY_FIELDS) == set(GROUP_KEYS)
    assert set(ReportRow.model_fields) == {f for fields in KEY_FIELDS.values() for f in fields} | set(METRICS)


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        ("Anna", "Anna"),
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+1 555", "'+1 555"),
        ("-x", "'-x"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-5.00", "-5.00"),  # a number stays a number
        (None, ""),
    ],
)
def test_csv_cells_cannot_be_formulas(name: str | None, cell: str) -> None:
    row = {"influencer_id": "inf_1", "influencer_name": name, **ZERO_METRICS}
    report = Report(ReportParams(D_FROM, D_TO, ("influencer",)), "USD", "raw", [row], dict(ZERO_TOTALS))
    lines = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert lines[0]["influencer_name"] == cell
    assert lines[1]["type"] == "total" and lines[1]["influencer_name"] == ""


ZERO_METRICS = {
    "clicks": 0, "bot_clicks": 0, "unique_clicks": 0, "conversions": 0, "revenue": "0.00", "commission": "0.00",
    "fees": "0.00", "cost": "0.00", "roi": None, "conversion_rate": None, "epc": None, "aov": None,
}
ZERO_TOTALS = {**ZERO_METRICS, "unattributed_conversions": 0, "unattributed_revenue": "0.00"}
