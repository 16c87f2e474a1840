"""Stream entry -> ClickHouse row, pure (Snuba's ``processor.py``).

The redirect stores only what the response or privacy needs; this module adds
what reports need: device type, browser and OS family (``ua-parser``), the bot
verdict (request hints, an empty user agent, social link-preview fetchers, then
``crawlerdetect``'s patterns) and the referer host. A new user agent costs ~40 us
(ua-parser's Rust matcher, crawlerdetect's patterns run by RE2), and verdicts are
cached per distinct user agent (LRU): real traffic repeats most agents.

Conversions arrive complete from the postback helper; they are only decoded
to typed values (Decimal, datetime UTC, ints) in ``events.CONVERSION_COLUMNS``
order. Anything malformed raises ``ValueError``: the worker dead-letters it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import re2
import ua_parser
from crawlerdetect.providers.crawlers import data as CRAWLER_PATTERNS
from crawlerdetect.providers.exclusions import data as EXCLUSION_PATTERNS

from tracker.core.events import CLICK_COLUMNS, CLICK_VERSION, CONVERSION_COLUMNS, HINT_HEAD, HINT_PREFETCH, ClickEvent

DEVICE_MOBILE = "mobile"
DEVICE_TABLET = "tablet"
DEVICE_DESKTOP = "desktop"
DEVICE_BOT = "bot"
DEVICE_OTHER = "other"

REASON_CRAWLER = "crawler"
REASON_PREVIEW = "preview"
REASON_HEAD = "head"
REASON_PREFETCH = "prefetch"
REASON_EMPTY_UA = "empty_ua"

# Link-preview fetchers of social apps and messengers (lower case, matched as substrings).
# They fetch a link to draw a card when it is posted, not because a person clicked.
# In-app browsers (Instagram, TikTok, Facebook's FBAN/FB_IAB) are people and are not listed.
PREVIEW_AGENTS: tuple[str, ...] = (
    "facebookexternalhit",
    "facebookcatalog",
    "facebot",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "linkedinbot",
    "whatsapp/",
    "telegrambot",
    "discordbot",
    "pinterestbot",
    "pinterest/0.",
    "skypeuripreview",
    "applebot",
    "google-inspectiontool",
    "google-pagerenderer",
    "redditbot",
    "embedly",
    "iframely",
    "vkshare",
    "snap url preview",
    "viber",
    "mastodon/",
    "bluesky cardyb",
    "microsoftpreview",
    "bitlybot",
    "tumblr/",
    "yahoo link preview",
)

_TABLET_WORDS = ("ipad", "tablet", "kindle", "playbook", "nexus 7", "nexus 9", "nexus 10")
_MOBILE_OS = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "Symbian OS", "HarmonyOS"}
_DESKTOP_OS = {
    "Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian", "FreeBSD", "OpenBSD",
    "NetBSD", "Linux Mint", "Arch Linux", "CentOS", "Red Hat", "SUSE", "Solaris",
}

# DateTime64(3) holds 1900..2299; a click outside these years is garbled, not a click.
_MIN_TS_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_TS_MS = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_HOST = 253


class Crawlers:
    """``crawlerdetect``'s verdict from its maintained pattern lists, matched by RE2.

    crawlerdetect strips its exclusion patterns from the agent, then searches one
    alternation of ~1,500 crawler patterns with Python's backtracking ``re``: ~400 us
    per new user agent, which made ingest of traffic with many distinct agents 2.5
    times slower. RE2 runs the same alternations in linear time (~15 us). It has no
    lookaround; the few patterns with one keep Python's ``re`` (no crawler pattern
    matches the empty string, so "any pattern matches" is exactly crawlerdetect's
    test, however the alternation is split). Tests compare it with crawlerdetect.
    """

    def __init__(self, crawlers: Sequence[str] = CRAWLER_PATTERNS, exclusions: Sequence[str] = EXCLUSION_PATTERNS):
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = 256 << 20  # the crawler alternation's automaton outgrows RE2's 8 MB default
        lookaround = [p for p in crawlers if "(?=" in p or "(?!" in p or "(?<" in p]
        linear = [p for p in crawlers if p not in lookaround]  # one or two patterns: a list is fine
        self._exclusions = re2.compile("|".join(exclusions), options)
        self._crawlers = re2.compile("|".join(linear), options)
        self._rest = re.compile("|".join(lookaround), re.IGNORECASE) if lookaround else None

    def __call__(self, user_agent: str) -> bool:
        agent = self._exclusions.sub("", user_agent)
        if not agent:
            return False
        return self._crawlers.search(agent) is not None or (
            self._rest is not None and self._rest.search(agent) is not None
        )


_is_crawler = Crawlers()


class Agent(NamedTuple):
    """What one user agent string says about the client."""

    device: str
    browser: str
    os: str
    bot_reason: str  # "" for a person


@lru_cache(maxsize=65536)
def classify_agent(user_agent: str) -> Agent:
    """Device type, browser and OS family and bot verdict of a user agent (cached)."""
    ua = user_agent.strip()
    if not ua:
        return Agent(DEVICE_BOT, "Other", "Other", REASON_EMPTY_UA)
    result = ua_parser.parse(ua)
    browser = result.user_agent.family if result.user_agent else "Other"
    os_family = result.os.family if result.os else "Other"
    low = ua.lower()
    if any(name in low for name in PREVIEW_AGENTS):
        return Agent(DEVICE_BOT, browser, os_family, REASON_PREVIEW)
    spider = result.device is not None and result.device.family == "Spider"
    if spider or _is_crawler(ua):
        return Agent(DEVICE_BOT, browser, os_family, REASON_CRAWLER)
    return Agent(_device_type(low, result, os_family), browser, os_family, "")


def _device_type(low: str, result: ua_parser.Result, os_family: str) -> str:
    device = result.device
    names = " ".join(filter(None, (device.family, device.brand, device.model))).lower() if device else ""
    if any(word in names or word in low for word in _TABLET_WORDS):
        return DEVICE_TABLET
    # Android tablets leave "Mobile" out of the user agent (Google's guidance to vendors).
    if os_family == "Android" and "mobile" not in low:
        return DEVICE_TABLET
    if os_family in _MOBILE_OS or "mobi" in low or "iphone" in names:
        return DEVICE_MOBILE
    if os_family in _DESKTOP_OS:
        return DEVICE_DESKTOP
    return DEVICE_OTHER


@lru_cache(maxsize=16384)
def referer_host(referer: str) -> str:
    """The lower-case host of a referer URL, or "" when there is none."""
    ref = referer.strip()
    if not ref:
        return ""
    try:
        parts = urlsplit(ref if "//" in ref else "//" + ref)
        host = parts.hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".")
    if len(host) > _MAX_HOST or any(c.isspace() for c in host):
        return ""
    return host


def click_time(ts_ms: int) -> datetime:
    if not _MIN_TS_MS <= ts_ms < _MAX_TS_MS:
        raise ValueError(f"click time {ts_ms} ms is outside the years 2000 to 2199")
    return _EPOCH + timedelta(milliseconds=ts_ms)


def click_row(event: ClickEvent) -> list[Any]:
    """One ``events.CLICK_COLUMNS`` row of a decoded click; ValueError when it cannot be stored."""
    if not type(event.ts_ms) is type(event.link_id) is type(event.visitor_hash) is int:  # JSON true is no id
        raise ValueError("click entry has a boolean time, link id or visitor hash")
    ts = click_time(event.ts_ms)
    if not 0 <= event.link_id < 2**64:
        raise ValueError(f"link id {event.link_id} is out of range")
    agent = classify_agent(event.user_agent)
    if event.hint == HINT_HEAD:
        device, reason = DEVICE_BOT, REASON_HEAD
    elif event.hint == HINT_PREFETCH:
        device, reason = DEVICE_BOT, REASON_PREFETCH
    else:
        device, reason = agent.device, agent.bot_reason
    return [
        event.click_id,
        ts,
        event.brand_id,
        event.campaign_id,
        event.influencer_id,
        event.link_id,
        event.link_code,
        event.visitor_hash,
        event.country,
        device,
        agent.browser,
        agent.os,
        referer_host(event.referer),
        *event.utm,
        1 if reason else 0,
        reason,
    ]


def decode_click(raw: bytes | str) -> list[Any]:
    """Stream payload -> click row (``ClickEvent.decode`` + enrichment)."""
    return click_row(ClickEvent.decode(raw))


def click_columns(payloads: Sequence[bytes]) -> dict[str, Sequence[Any]]:
    """Many click payloads at once, as ``CLICK_COLUMNS`` columns (``ts`` in epoch ms).

    The throughput path of ingest: one ``json.loads`` for the whole batch, checks
    and enrichment column by column (C loops, one cache hit per row). It accepts
    exactly what ``decode_click`` accepts; on any malformed payload it raises
    ``ValueError`` and the caller decodes one by one to find it.
    """
    try:
        values = json.loads((b"[" + b",".join(payloads) + b"]").decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"a click entry is not JSON: {exc}") from None
    if len(values) != len(payloads) or not values:
        raise ValueError("click entries do not parse one by one")
    if set(map(type, values)) != {list} or set(map(len, values)) != {18}:
        raise ValueError("a click entry has the wrong shape")
    # One C pass per column: zip(*values) would juggle one iterator per row.
    cols = [list(map(itemgetter(k), values)) for k in range(18)]
    (version, click_id, ts_ms, brand, campaign, influencer, link_id, code, visitor, country, ua, ref) = cols[:12]
    utm, hint = cols[12:17], cols[17]
    if set(version) != {CLICK_VERSION}:
        raise ValueError("a click entry has the wrong version")
    for col in (ts_ms, link_id, visitor):
        if set(map(type, col)) != {int}:
            raise ValueError("a click entry has a bad time, link id or visitor hash")
    for col in (click_id, brand, campaign, influencer, code, country, ua, ref, *utm, hint):
        if set(map(type, col)) != {str}:
            raise ValueError("a click entry has a non-string field")
    if min(map(len, click_id)) == 0:
        raise ValueError("a click entry has an empty click id")
    if min(ts_ms) < _MIN_TS_MS or max(ts_ms) >= _MAX_TS_MS:
        raise ValueError("a click time is outside the years 2000 to 2199")
    if min(link_id) < 0 or max(link_id) >= 2**64 or min(visitor) < 0 or max(visitor) >= 2**64:
        raise ValueError("a click entry has a link id or visitor hash out of range")
    agents = list(map(classify_agent, ua))
    device, browser, os_family, reason = (list(map(itemgetter(k), agents)) for k in range(4))
    if set(hint) != {""}:
        for i, h in enumerate(hint):
            if h == HINT_HEAD:
                device[i], reason[i] = DEVICE_BOT, REASON_HEAD
            elif h == HINT_PREFETCH:
                device[i], reason[i] = DEVICE_BOT, REASON_PREFETCH
    # Tuples straight from the transposition: no copies (pyarrow takes any sequence).
    return {
        "click_id": click_id,
        "ts": ts_ms,
        "brand_id": brand,
        "campaign_id": campaign,
        "influencer_id": influencer,
        "link_id": link_id,
        "link_code": code,
        "visitor_hash": visitor,
        "country": country,
        "device": device,
        "browser": browser,
        "os": os_family,
        "referer_host": list(map(referer_host, ref)),
        "utm_source": utm[0],
        "utm_medium": utm[1],
        "utm_campaign": utm[2],
        "utm_term": utm[3],
        "utm_content": utm[4],
        "is_bot": list(map(int, map(bool, reason))),
        "bot_reason": reason,
    }


# ---- the Arrow path: a batch of click payloads -> one Arrow table, no Python per row ----------

# A click payload as ``ClickEvent.encode`` writes it when no string needs an escape (the
# common case: user agents, referers and ids carry no quote, backslash or control character).
# On such a line JSON decoding is trivial: a string's value is its raw UTF-8 bytes and a number
# is its digits, so the Arrow kernels below read exactly what ``json.loads`` would.
# Anything else (an escape, whitespace, another version spelling, a poison entry) does
# not match and the batch takes ``click_columns`` (which finds the poison entries).
_ARROW_STR = r'"[^"\\\x00-\x1f]*"'
_ARROW_INT = r"(?:0|[1-9][0-9]*)"
CANONICAL_CLICK = (
    r'^\[1,"[^"\\\x00-\x1f]+",'  # version 1, a non-empty click id
    + ",".join([_ARROW_INT, _ARROW_STR, _ARROW_STR, _ARROW_STR, _ARROW_INT, _ARROW_STR, _ARROW_INT])
    + "," + ",".join([_ARROW_STR] * 9)  # country, user agent, referer, 5 UTM values, hint
    + r"\]$"
)
# Split on '"', a canonical line has 29 pieces at fixed places: strings at odd places,
# ",<int>," between them for the time (2), link id (8) and visitor hash (10).
_PIECES = 29
_STRING_PIECES = {
    "click_id": 1, "brand_id": 3, "campaign_id": 5, "influencer_id": 7, "link_code": 9, "country": 11,
    "user_agent": 13, "referer": 15, "utm_source": 17, "utm_medium": 19, "utm_campaign": 21,
    "utm_term": 23, "utm_content": 25, "hint": 27,
}
_INT_PIECES = {"ts": (2, pa.int64()), "link_id": (8, pa.uint64()), "visitor_hash": (10, pa.uint64())}
_ARROW_TS = pa.timestamp("ms", tz="UTC")


def click_table(payloads: Sequence[bytes]) -> pa.Table:
    """Many click payloads as one Arrow table of ``CLICK_COLUMNS``, in Arrow's C++ kernels.

    The throughput path of ingest (no Python object per row; the kernels release the
    GIL, so it overlaps the previous batch's insert). Enrichment is per distinct user
    agent and referer. It returns exactly the rows ``click_columns`` gives; it raises
    ``ValueError`` for any batch it cannot prove that for (a line that is not canonical,
    a value out of range, a click id twice): the caller then takes ``click_columns``.
    """
    if not payloads:
        raise ValueError("no click entries")
    try:
        lines = pa.array(payloads, pa.binary()).cast(pa.string())  # validates UTF-8
    except (pa.ArrowInvalid, TypeError) as exc:
        raise ValueError(f"click entries are not UTF-8 bytes: {exc}") from None
    if not pc.all(pc.match_substring_regex(lines, CANONICAL_CLICK)).as_py():
        raise ValueError("a click entry is not in canonical form")
    flat = pc.split_pattern(lines, '"').flatten()
    starts = pa.array(np.arange(0, len(flat), _PIECES, dtype=np.int64))

    def piece(k: int) -> pa.Array:
        return flat.take(pc.add(starts, k))

    cols: dict[str, pa.Array] = {name: piece(k) for name, k in _STRING_PIECES.items()}
    try:
        for name, (k, typ) in _INT_PIECES.items():
            cols[name] = pc.utf8_slice_codeunits(piece(k), 1, -1).cast(typ)  # ",123," -> 123
    except pa.ArrowInvalid as exc:  # more digits than the type holds
        raise ValueError(f"a click entry has a number out of range: {exc}") from None
    low, high = pc.min_max(cols["ts"]).values()
    if low.as_py() < _MIN_TS_MS or high.as_py() >= _MAX_TS_MS:
        raise ValueError("a click time is outside the years 2000 to 2199")
    if pc.count_distinct(cols["click_id"]).as_py() != len(payloads):
        raise ValueError("a click id is twice in the batch")
    agents = pc.dictionary_encode(cols.pop("user_agent"))
    verdicts = [classify_agent(ua) for ua in agents.dictionary.to_pylist()]
    device, browser, os_family, reason = (
        pa.array([v[k] for v in verdicts], pa.string()).take(agents.indices) for k in range(4)
    )
    hint = cols.pop("hint")
    if pc.any(pc.not_equal(hint, "")).as_py():
        head, prefetch = pc.equal(hint, HINT_HEAD), pc.equal(hint, HINT_PREFETCH)
        device = pc.if_else(pc.or_(head, prefetch), DEVICE_BOT, device)
        reason = pc.if_else(head, REASON_HEAD, pc.if_else(prefetch, REASON_PREFETCH, reason))
    referers = pc.dictionary_encode(cols.pop("referer"))
    hosts = pa.array([referer_host(r) for r in referers.dictionary.to_pylist()], pa.string())
    cols.update(
        ts=cols["ts"].cast(_ARROW_TS),
        device=device,
        browser=browser,
        os=os_family,
        referer_host=hosts.take(referers.indices),
        is_bot=pc.not_equal(reason, "").cast(pa.uint8()),
        bot_reason=reason,
    )
    return pa.Table.from_arrays([cols[c] for c in CLICK_COLUMNS], names=list(CLICK_COLUMNS))


# Conversion columns by type; everything else is a string.
_DECIMALS = {"amount", "refunded_amount", "original_amount", "original_refunded_amount", "fx_rate", "commission"}
_TIMES = {"occurred_at", "created_at", "updated_at"}
_UINTS = {"version", "link_id", "attributed"}
_SCALE = {"fx_rate": 8}  # Decimal(18, 8); the other money columns are Decimal(18, 4)
_REQUIRED_STRINGS = {"brand_id", "order_id", "conversion_id", "status", "currency"}


def decode_conversion(raw: bytes | str) -> list[Any]:
    """Stream payload -> one ``events.CONVERSION_COLUMNS`` row with typed values."""
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"conversion entry is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("conversion entry is not a JSON object")
    missing = [c for c in CONVERSION_COLUMNS if c not in data]
    if missing:
        raise ValueError(f"conversion entry lacks {', '.join(missing)}")
    row: list[Any] = []
    for column in CONVERSION_COLUMNS:
        value = data[column]
        if column in _DECIMALS:
            row.append(_decimal(column, value))
        elif column in _TIMES:
            row.append(_time(column, value))
        elif column in _UINTS:
            row.append(_uint(column, value))
        else:
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValueError(f"conversion {column} {value!r} is not a string")
            if column in _REQUIRED_STRINGS and not value:
                raise ValueError(f"conversion {column} is empty")
            row.append(value)
    return row


def _decimal(column: str, value: object) -> Decimal:
    if value is None and column != "amount":
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"conversion {column} {value!r} is not a decimal")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"conversion {column} {value!r} is not a decimal") from None
    scale = _SCALE.get(column, 4)
    if not d.is_finite() or abs(d) >= Decimal(10) ** (18 - scale):
        raise ValueError(f"conversion {column} {value!r} is out of range")
    if d != d.quantize(Decimal(1).scaleb(-scale)):
        raise ValueError(f"conversion {column} {value!r} has more than {scale} decimals")
    return d


def _time(column: str, value: object) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return click_time(value)
    if not isinstance(value, str):
        raise ValueError(f"conversion {column} {value!r} is not a time")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"conversion {column} {value!r} is not an ISO 8601 time") from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if not 2000 <= t.year < 2200:
        raise ValueError(f"conversion {column} {value!r} is outside the years 2000 to 2199")
    return t


def _uint(column: str, value: object) -> int:
    if value is None and column == "link_id":
        return 0
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"conversion {column} {value!r} is not an unsigned integer")
    return value
