"""Stream entry -> ClickHouse row, pure (Snuba's ``processor.py``).

The redirect stores only what the response or privacy needs; a click's row adds what
reports need (``tracker.ingest.agents``: device, browser, OS, bot verdict, referer host).
Three paths give the same rows: one entry at a time (``decode_click``), a batch column by
column (``click_columns``), and a batch in Arrow's C++ kernels (``click_table``), tried in
the reverse order. Conversions arrive complete from the postback helper and are only typed.
Anything malformed raises ``ValueError``: the worker dead-letters it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracker.core.events import (
    CLICK_COLUMNS,
    CLICK_VERSION,
    CONVERSION_COLUMNS,
    CONVERSION_DEFAULTS,
    HINT_HEAD,
    HINT_PREFETCH,
    ClickEvent,
)
from tracker.ingest.agents import DEVICE_BOT, REASON_HEAD, REASON_PREFETCH, classify_agent, referer_host

# DateTime64(3) holds 1900..2299; a click outside these years is garbled, not a click.
_MIN_TS_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_TS_MS = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp() * 1000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
_UINTS = {"version", "link_id", "attributed", "hold_days", "review"}
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
    # An entry streamed before a column existed gets its default.
    data = {**{c: v for c, v in CONVERSION_DEFAULTS.items() if data.get(c) in (None, "")}, **{
        k: v for k, v in data.items() if not (k in CONVERSION_DEFAULTS and v in (None, ""))}}
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
