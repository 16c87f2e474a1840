"""Report dates are YYYY-MM-DD only and ``tz`` names a zone both Python and ClickHouse know (issue #13, item 7)."""

from __future__ import annotations

import zoneinfo
from datetime import date

import pytest

from tracker.core.errors import BadRequest
from tracker.reports.params import ZONES, parse_params
from tracker.storage.clickhouse import ClickHouse

DAY = {"from": "2026-11-01", "to": "2026-11-02"}


@pytest.mark.parametrize(
    "text",
    [
        "2026-W49-1",  # ISO week date: Python's date.fromisoformat takes it
        "2026W491",
        "2026-W49",
        "2026-339",  # ordinal date
        "2026339",
        "20261205",  # basic format
        "2026-12-5",
        "2026-1-05",
        "\uff12\uff10\uff12\uff16-\uff11\uff12-\uff10\uff15",  # full-width digits
        "2026-12-05T00:00",
        "2026-12-05Z",
        "+2026-12-05",
        "2026/12/05",
        "2026-02-30",
    ],
)
def test_dates_must_be_yyyy_mm_dd(text: str) -> None:
    for name in ("from", "to"):
        with pytest.raises(BadRequest) as info:
            parse_params({**DAY, name: text})
        assert info.value.code == "bad_date"
        assert f"'{name}'" in info.value.message


def test_a_calendar_date_is_read() -> None:
    p = parse_params({"from": "2026-02-28", "to": "2028-02-29"})
    assert (p.date_from, p.date_to) == (date(2026, 2, 28), date(2028, 2, 29))


@pytest.mark.parametrize(
    "tz",
    [
        "right/UTC",  # Python finds the file; ClickHouse does not know the zone
        "right/Europe/Paris",
        "posix/UTC",
        "posix/Europe/Paris",
        "posixrules",
        "localtime",  # the host's zone file, whatever it is
        "/usr/share/zoneinfo/UTC",
        "Europe/../UTC",
        "utc/",
        "Mars/Olympus",
        "Europe/Paris\x00",
        "x" * 300,
    ],
)
def test_zones_one_engine_does_not_know_are_refused(tz: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_params({**DAY, "tz": tz})
    assert info.value.code == "bad_timezone"


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"])
def test_common_zones_are_accepted(tz: str) -> None:
    assert parse_params({**DAY, "tz": tz}).tz == tz


def test_every_accepted_zone_works_in_clickhouse(ch: ClickHouse) -> None:
    """The real chDB: each zone the reports accept is one ClickHouse converts to, and Python loads."""
    known = {row[0] for row in ch.query("SELECT time_zone FROM system.time_zones")}
    assert ZONES, "no zones accepted"
    missing = sorted(ZONES - known)
    assert missing == []
    for tz in sorted(ZONES):
        zoneinfo.ZoneInfo(tz)
    # Spot-check the conversion itself with a bound parameter (what the report query does).
    for tz in ("UTC", "Europe/Paris", "Asia/Kathmandu", "Pacific/Chatham"):
        assert ch.query("SELECT toString(toTimeZone(now(), {tz:String}))", {"tz": tz})
    # The zone really is unknown to ClickHouse (the reason for refusing it); the "posix/" names
    # chDB happens to load are not in its system.time_zones, nor in Python's list, so they are refused too.
    for tz in ("right/UTC",):
        with pytest.raises(Exception, match=r"(?i)time zone"):
            ch.query("SELECT toString(toTimeZone(now(), {tz:String}))", {"tz": tz})
