"""The report query string: what it accepts and how it refuses (400 with a code naming the parameter)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from tracker.core.errors import BadRequest
from tracker.reports.params import GROUP_KEYS, ReportParams, ReportQuery, parse_params


def test_parse_params_reads_everything() -> None:
    p = parse_params(
        {
            "from": "2026-11-01",
            "to": "2026-11-30",
            "group_by": "influencer, day,influencer",
            "tz": "Europe/Paris",
            "campaign_id": "cmp_a1",
            "influencer_id": "inf_b2",
            "link": "abc123",
            "format": "CSV",
        }
    )
    assert p == ReportParams(
        date(2026, 11, 1), date(2026, 11, 30), ("influencer", "day"), "Europe/Paris",
        "cmp_a1", "inf_b2", "abc123", "csv",
    )


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        ({"to": "2026-11-01"}, "bad_date", "'from'"),
        ({"from": "2026-11-01"}, "bad_date", "'to'"),
        ({"from": "2026-13-01", "to": "2026-11-01"}, "bad_date", "2026-13-01"),
        ({"from": "yesterday", "to": "2026-11-01"}, "bad_date", "yesterday"),
        ({"from": "2026-11-01T00:00", "to": "2026-11-01"}, "bad_date", "2026-11-01T00:00"),
        ({"from": "20261101", "to": "2026-11-01"}, "bad_date", "20261101"),
        ({"from": "1969-12-31", "to": "2026-11-01"}, "bad_date", "1969-12-31"),
        ({"from": "2026-11-01", "to": "2026-11-02", "group_by": "week"}, "bad_group_by", "week"),
        ({"from": "2026-11-01", "to": "2026-11-02", "group_by": "day;drop"}, "bad_group_by", "day;drop"),
        ({"from": "2026-11-01", "to": "2026-11-02", "tz": "Mars/Olympus"}, "bad_timezone", "Mars/Olympus"),
        ({"from": "2026-11-01", "to": "2026-11-02", "tz": "../../etc/passwd"}, "bad_timezone", "passwd"),
        ({"from": "2026-11-01", "to": "2026-11-02", "format": "xml"}, "bad_format", "xml"),
        ({"from": "2026-11-01", "to": "2026-11-02", "campaign_id": "x' OR 1=1"}, "bad_filter", "OR 1=1"),
        ({"from": "2026-11-01", "to": "2026-11-02", "groupby": "day"}, "unknown_parameter", "groupby"),
    ],
)
def test_parse_params_rejects(query: dict[str, str], code: str, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_params(query)
    assert info.value.code == code
    assert needle in info.value.message




DATES = {"from": "2026-11-01", "to": "2026-11-02"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {"group_by": (), "tz": "UTC", "format": "json", "campaign_id": None, "link_code": None}),
        ({"from": " 2026-11-01 "}, {"date_from": date(2026, 11, 1)}),
        ({"group_by": ""}, {"group_by": ()}),
        ({"group_by": " , DAY,,Hour ,day"}, {"group_by": ("day", "hour")}),
        ({"group_by": ",".join(reversed(GROUP_KEYS))}, {"group_by": tuple(reversed(GROUP_KEYS))}),
        ({"tz": "  "}, {"tz": "UTC"}),
        ({"tz": " Asia/Kolkata "}, {"tz": "Asia/Kolkata"}),
        ({"format": " Json "}, {"format": "json"}),
        ({"campaign_id": "", "influencer_id": ""}, {"campaign_id": None, "influencer_id": None}),
        ({"link_code": "abc123"}, {"link_code": "abc123"}),
        ({"link": "", "link_code": "abc123"}, {"link_code": "abc123"}),
        ({"link": "first1", "link_code": "second"}, {"link_code": "first1"}),
        ({"influencer_id": "i" * 64}, {"influencer_id": "i" * 64}),
        ({"from": "2000-01-01", "to": "2199-12-31"}, {"date_from": date(2000, 1, 1), "date_to": date(2199, 12, 31)}),
    ],
)
def test_parse_params_accepts(query: dict[str, str], expected: dict[str, Any]) -> None:
    p = parse_params({**DATES, **query})
    assert {k: getattr(p, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ({"from": ""}, "bad_date", "The query parameter 'from' is required: a date such as 2026-11-01."),
        ({"to": "2026-11-1"}, "bad_date", "'to' is '2026-11-1', which is not a date in the form YYYY-MM-DD."),
        ({"to": "2200-01-01"}, "bad_date", "'to' is 2200-01-01, outside 2000-01-01 to 2199-12-31."),
        ({"group_by": "day,"}, None, None),
        ({"group_by": "influencers"}, "bad_group_by", "group_by has 'influencers', which is not one of"),
        ({"tz": "/etc/localtime"}, "bad_timezone", "tz '/etc/localtime' is not an IANA time zone"),
        ({"format": "JSONL"}, "bad_format", "format 'JSONL' is not json or csv."),
        ({"influencer_id": "i" * 65}, "bad_filter", "'influencer_id' is '" + "i" * 65 + "'"),
        ({"link": "a b"}, "bad_filter", "'link' is 'a b', which is not a valid id or code."),
        ({"link_code": "a/b"}, "bad_filter", "'link' is 'a/b'"),
        ({"date_from": "2026-11-01"}, "unknown_parameter", "Unknown query parameter 'date_from': use campaign_id,"),
        # Checked in order: an unknown name first, then from, to, group_by, tz, format, filters.
        ({"from": "x", "sort": "roi"}, "unknown_parameter", "'sort'"),
        ({"from": "x", "group_by": "week"}, "bad_date", "'from'"),
        ({"group_by": "week", "tz": "Nowhere"}, "bad_group_by", "week"),
        ({"format": "xml", "campaign_id": "'"}, "bad_format", "xml"),
    ],
)
def test_parse_params_refuses_with_400(query: dict[str, str], code: str | None, message: str | None) -> None:
    if code is None:
        parse_params({**DATES, **query})
        return
    with pytest.raises(BadRequest) as info:
        parse_params({**DATES, **query})
    assert (info.value.status, info.value.code) == (400, code)
    assert message is not None and message in info.value.message and info.value.message.endswith(".")


def test_the_query_model_documents_what_it_takes() -> None:
    schema = ReportQuery.model_json_schema()
    assert schema["required"] == ["from", "to"]
    assert set(schema["properties"]) == {
        "from", "to", "group_by", "tz", "format", "campaign_id", "influencer_id", "link",
    }
    assert schema["properties"]["format"]["enum"] == ["json", "csv"]
    assert schema["properties"]["group_by"]["type"] == "string"  # comma-separated
