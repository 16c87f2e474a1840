"""The report request: ``GET /api/v1/reports``'s query string, validated into ``ReportParams``.

Every refusal answers 400 with a code of its own (``bad_date``, ``bad_group_by``,
``bad_timezone``, ``bad_format``, ``bad_filter``, ``unknown_parameter``) and a message naming
the parameter and its value; the validators raise those errors themselves (pydantic lets
exceptions other than its own pass). The range checks that need the limit
(``bad_range``, ``range_too_long``) come with the scope, in ``tracker.reports.sql``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from tracker.api.schema import Query, parse_query
from tracker.core.errors import BadRequest

GroupKey = Literal["influencer", "campaign", "link", "day", "hour", "country", "device"]
GROUP_KEYS: tuple[str, ...] = get_args(GroupKey)

ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
_ID = re.compile(ID_PATTERN)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The IANA zones of Python's database, without the host's "localtime": ZoneInfo() alone also
# loads any file under the zone directories ("right/UTC", "posix/...", "posixrules"), which
# ClickHouse does not know (a report in one would fail there). A test checks each of these
# against the real chDB's system.time_zones.
ZONES: frozenset[str] = frozenset(available_timezones() - {"localtime"})
_MIN_DATE = date(2000, 1, 1)
_MAX_DATE = date(2199, 12, 31)


@dataclass(frozen=True)
class ReportParams:
    """A validated report request (no brand: the brand comes from the caller's key)."""

    date_from: date
    date_to: date
    group_by: tuple[str, ...] = ()
    tz: str = "UTC"
    campaign_id: str | None = None
    influencer_id: str | None = None
    link_code: str | None = None
    format: str = "json"


def zone(tz: str) -> ZoneInfo:
    try:
        if tz not in ZONES:
            raise ValueError
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        shown = tz if len(tz) <= 60 else tz[:60] + "..."
        raise BadRequest(
            f"tz {shown!r} is not an IANA time zone such as Europe/Paris (one both tracker and ClickHouse know).",
            code="bad_timezone",
        ) from None


def _date(raw: str | None, name: str) -> date:
    if raw is None or not raw.strip():
        raise BadRequest(f"The query parameter '{name}' is required: a date such as 2026-11-01.", code="bad_date")
    value = None
    # Exactly YYYY-MM-DD: date.fromisoformat also reads week dates ("2026-W49-1") and "20261205".
    if _DAY.fullmatch(raw.strip()):
        try:
            value = date.fromisoformat(raw.strip())
        except ValueError:
            value = None
    if value is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise BadRequest(f"'{name}' is '{shown}', which is not a date in the form YYYY-MM-DD.", code="bad_date")
    if not _MIN_DATE <= value <= _MAX_DATE:
        raise BadRequest(f"'{name}' is {value}, outside {_MIN_DATE} to {_MAX_DATE}.", code="bad_date")
    return value


def _filter(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not _ID.match(value):
        raise BadRequest(f"'{name}' is '{value[:80]}', which is not a valid id or code.", code="bad_filter")
    return value


_GROUP_BY_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "description": f"Group keys, comma-separated, any of: {', '.join(GROUP_KEYS)}. Default: totals only.",
        "examples": ["influencer", "influencer,day"],
    }
)


class ReportQuery(Query):
    """The query string of ``GET /api/v1/reports``, checked in field order."""

    date_from: date = Field(alias="from", description="First day, inclusive, in `tz` (exactly YYYY-MM-DD).")
    date_to: date = Field(alias="to", description="Last day, inclusive, in `tz` (exactly YYYY-MM-DD).")
    group_by: Annotated[tuple[GroupKey, ...], _GROUP_BY_SCHEMA] = Field((), json_schema_extra={"default": ""})
    tz: str = Field(
        "UTC", description="IANA time zone of the dates, `day` and `hour` (default UTC), e.g. Europe/Paris; "
        "`right/...`, `posix/...` and `localtime` are refused (ClickHouse does not know them)."
    )
    format: Literal["json", "csv"] = "json"
    campaign_id: str | None = Field(None, pattern=ID_PATTERN, description="Only this campaign.")
    influencer_id: str | None = Field(None, pattern=ID_PATTERN, description="Only this influencer.")
    link: str | None = Field(
        None, pattern=ID_PATTERN, description="Only this link: its short code (`link_code` is taken too)."
    )

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        accepted = {f.alias or name for name, f in cls.model_fields.items()} | {"link_code"}
        unknown = sorted(set(data) - accepted)
        if unknown:
            raise BadRequest(
                f"Unknown query parameter '{unknown[0]}': use {', '.join(sorted(accepted))}.",
                code="unknown_parameter",
            )
        out = {"from": None, "to": None, **data}
        link, code = out.pop("link", None), out.pop("link_code", None)
        link = link or code
        if link is not None:
            out["link"] = link
        return out

    @field_validator("date_from", "date_to", mode="before")
    @classmethod
    def _dates(cls, value: str | None, info: ValidationInfo) -> date:
        return _date(value, "from" if info.field_name == "date_from" else "to")

    @field_validator("group_by", mode="before")
    @classmethod
    def _group_by(cls, value: str | None) -> tuple[str, ...]:
        keys: list[str] = []
        for part in (value or "").split(","):
            key = part.strip().lower()
            if not key:
                continue
            if key not in GROUP_KEYS:
                raise BadRequest(
                    f"group_by has '{part.strip()}', which is not one of {', '.join(GROUP_KEYS)}.",
                    code="bad_group_by",
                )
            if key not in keys:
                keys.append(key)
        return tuple(keys)

    @field_validator("tz", mode="before")
    @classmethod
    def _tz(cls, value: str | None) -> str:
        tz = (value or "").strip() or "UTC"
        zone(tz)
        return tz

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: str | None) -> str:
        fmt = (value or "").strip().lower() or "json"
        if fmt not in ("json", "csv"):
            raise BadRequest(f"format '{value}' is not json or csv.", code="bad_format")
        return fmt

    @field_validator("campaign_id", "influencer_id", "link", mode="before")
    @classmethod
    def _filters(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _filter(value, str(info.field_name))

    def params(self) -> ReportParams:
        return ReportParams(
            self.date_from, self.date_to, self.group_by, self.tz, self.campaign_id, self.influencer_id, self.link,
            self.format,
        )


def parse_params(query: Mapping[str, str]) -> ReportParams:
    """Read the query string of ``GET /api/v1/reports``; BadRequest names the bad value."""
    return parse_query(ReportQuery, query).params()
