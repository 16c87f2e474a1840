"""Entry -> row: click rows (one by one, by columns, in Arrow), conversion decoding, poison."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.ingest.test_agents import CHROME_WIN, IPHONE_IG, PIXEL
from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS, ClickEvent, encode_conversion
from tracker.ingest import enrich


def click(**kw: Any) -> ClickEvent:
    base: dict[str, Any] = {
        "click_id": "AbCdEfGhIjKlMnOpQrStUv", "ts_ms": 1_764_000_000_123, "brand_id": "brd_1", "campaign_id": "cmp_1",
        "influencer_id": "inf_1", "link_id": 42, "link_code": "abc", "visitor_hash": 2**63 + 5, "country": "DE",
        "user_agent": IPHONE_IG, "referer": "https://www.instagram.com/", "utm": ("ig", "social", "x", "", ""),
        "hint": "",
    }
    base.update(kw)
    return ClickEvent(**base)


def test_click_row_follows_the_column_order() -> None:
    row = enrich.decode_click(click().encode())
    values = dict(zip(CLICK_COLUMNS, row, strict=True))
    assert values["ts"] == datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)
    assert values["device"] == "mobile"
    assert values["browser"] == "Instagram"
    assert values["os"] == "iOS"
    assert values["referer_host"] == "www.instagram.com"
    assert values["utm_source"] == "ig"
    assert values["visitor_hash"] == 2**63 + 5
    assert (values["is_bot"], values["bot_reason"]) == (0, "")


@pytest.mark.parametrize(
    ("hint", "ua", "reason"),
    [
        ("head", IPHONE_IG, "head"),
        ("prefetch", CHROME_WIN, "prefetch"),
        ("", "", "empty_ua"),
        ("", "Twitterbot/1.0", "preview"),
    ],
)
def test_request_hints_make_a_bot(hint: str, ua: str, reason: str) -> None:
    row = enrich.click_row(click(hint=hint, user_agent=ua))
    values = dict(zip(CLICK_COLUMNS, row, strict=True))
    assert (values["is_bot"], values["bot_reason"], values["device"]) == (1, reason, "bot")


@pytest.mark.parametrize("ts_ms", [0, -1, 5, 10**15])
def test_click_time_out_of_range_is_poison(ts_ms: int) -> None:
    with pytest.raises(ValueError, match="outside the years"):
        enrich.decode_click(click(ts_ms=ts_ms).encode())


def conversion(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: "" for c in CONVERSION_COLUMNS}
    row.update(
        brand_id="brd_1", order_id="o-1", version=3, conversion_id="cnv_1", store_id="sto_1", status="approved",
        currency="JPY", amount=Decimal("1200"), refunded_amount=Decimal(0), original_currency="USD",
        original_amount=Decimal("8.00"), original_refunded_amount=Decimal(0), fx_rate=Decimal("150.12345678"),
        commission=Decimal("120"), attributed=True, attribution="coupon", click_id=None, link_id=9,
        coupon_code="SAVE10", occurred_at=datetime(2026, 11, 1, 12, tzinfo=UTC),
        created_at=datetime(2026, 11, 1, 12, 0, 1, tzinfo=UTC), updated_at=datetime(2026, 11, 1, 12, 0, 1, tzinfo=UTC),
    )
    row.update(kw)
    return row


def test_conversion_decodes_to_typed_values() -> None:
    row = enrich.decode_conversion(encode_conversion(conversion()))
    values = dict(zip(CONVERSION_COLUMNS, row, strict=True))
    assert values["amount"] == Decimal("1200") and isinstance(values["amount"], Decimal)
    assert values["fx_rate"] == Decimal("150.12345678")
    assert values["attributed"] == 1
    assert values["click_id"] == ""
    assert values["version"] == 3
    assert values["occurred_at"] == datetime(2026, 11, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": True}, "not a decimal"),
        ({"amount": [1]}, "not a decimal"),
        ({"amount": "12.34567"}, "more than 4 decimals"),
        ({"amount": "1e20"}, "out of range"),
        ({"amount": "NaN"}, "out of range"),
        ({"fx_rate": "1.123456789"}, "more than 8 decimals"),
        ({"version": -1}, "not an unsigned integer"),
        ({"version": "3"}, "not an unsigned integer"),
        ({"occurred_at": "yesterday"}, "not an ISO 8601 time"),
        ({"occurred_at": "1970-01-01T00:00:00+00:00"}, "outside the years"),
        ({"order_id": ""}, "order_id is empty"),
        ({"store_id": 5}, "not a string"),
    ],
)
def test_bad_conversions_are_poison(change: dict[str, Any], message: str) -> None:
    raw = json.dumps({k: (str(v) if isinstance(v, Decimal | datetime) else v) for k, v in conversion(**change).items()})
    with pytest.raises(ValueError, match=message):
        enrich.decode_conversion(raw)


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"brand_id": "x"}'])
def test_malformed_conversion_entries_are_poison(raw: bytes) -> None:
    with pytest.raises(ValueError, match="conversion entry"):
        enrich.decode_conversion(raw)



def test_the_batch_path_gives_the_rows_of_the_row_path() -> None:
    events = [
        click(click_id=f"id{i:020d}", user_agent=ua, hint=hint, referer=ref, ts_ms=1_764_000_000_000 + i)
        for i, (ua, hint, ref) in enumerate(
            [(IPHONE_IG, "", ""), ("", "", "x.com"), (CHROME_WIN, "head", "https://A.b/"), (PIXEL, "prefetch", "")]
        )
    ]
    cols = enrich.click_columns([ev.encode() for ev in events])
    for i, ev in enumerate(events):
        row = enrich.click_row(ev)
        batch_row = [cols[c][i] for c in CLICK_COLUMNS]
        assert batch_row[1] == ev.ts_ms and row[1] == enrich.click_time(ev.ts_ms)
        assert batch_row[:1] + batch_row[2:] == row[:1] + row[2:]


@pytest.mark.parametrize(
    "bad",
    [
        b"nope",
        b"[1]",
        b'[1,"",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000.0,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",true,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US",null,"","","","","","",""]',
        b'[1,"c",5,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",18446744073709551616,"US","ua","","","","","","",""]',
        b'[2,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
    ],
)
def test_the_batch_path_refuses_what_the_row_path_refuses(bad: bytes) -> None:
    good = click().encode()
    with pytest.raises(ValueError):
        enrich.decode_click(bad)
    with pytest.raises(ValueError):
        enrich.click_columns([good, bad, good])
    assert len(enrich.click_columns([good, good])["click_id"]) == 2


# ---- the Arrow path (click_table) ------------------------------------------------------

def row_path(payloads: list[bytes]) -> list[dict[str, Any]] | None:
    """What today's row path stores for these payloads, or None when any of them is poison."""
    try:
        return [dict(zip(CLICK_COLUMNS, enrich.decode_click(p), strict=True)) for p in payloads]
    except ValueError:
        return None


def arrow_path(payloads: list[bytes]) -> list[dict[str, Any]] | None:
    try:
        return list(enrich.click_table(payloads).to_pylist())
    except ValueError:
        return None


UNICODE_UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36 Ünïcödé ☃ 😀 中文 עברית"


@pytest.mark.parametrize(
    "event",
    [
        click(),
        click(user_agent=UNICODE_UA, utm=("😀", "é", "中文", "a,b", "x y")),
        click(referer="https://www.Instagram.com/p/abc?x=1"),
        click(referer="https://user:pw@Example.ORG:8443/path"),
        click(referer="android-app://com.google.android.gm/"),
        click(referer="l.facebook.com/l.php"),
        click(referer="https://[::1]:80/"),
        click(referer="https://[::1/"),
        click(referer="https://example.com./"),
        click(referer="   "),
        click(referer="not a url at all"),
        click(referer="https://bücher.de/straße"),
        click(brand_id="", campaign_id="", influencer_id="", link_code="", country="", referer="", utm=("",) * 5),
        click(user_agent=""),
        click(user_agent="   "),
        click(user_agent="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
        click(user_agent="facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
        click(user_agent="curl/8.4.0", hint="head"),
        click(hint="head"),
        click(hint="prefetch"),
        click(hint="something-else"),
        click(visitor_hash=2**64 - 1, link_id=2**64 - 1),
        click(visitor_hash=0, link_id=0),
        click(ts_ms=946_684_800_000),  # 2000-01-01, the first accepted millisecond
        click(ts_ms=7_258_118_399_999),  # the last millisecond of 2199
        click(user_agent="DEL \x7f char", utm=("\x7f", "", "", "", "")),
        click(click_id="x" * 500, user_agent="A" * 5000),
    ],
    ids=lambda ev: ev.encode().decode()[:60],
)
def test_the_arrow_path_stores_what_the_row_path_stores(event: ClickEvent) -> None:
    payloads = [event.encode()]
    expected = row_path(payloads)
    assert expected is not None
    assert arrow_path(payloads) == expected


@pytest.mark.parametrize(
    "payload",
    [
        # Values the encoder escapes: the row path stores them, the Arrow path leaves them to it.
        click(user_agent='Mozilla "quoted" ua').encode(),
        click(user_agent="back\\slash").encode(),
        click(referer="https://a.com/\n").encode(),
        click(utm=("tab\there", "", "", "", "")).encode(),
        click(utm=("nul\x00", "", "", "", "")).encode(),
        # Other spellings of valid JSON than the encoder's.
        b'[1, "c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[true,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1.0,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"\\u0063",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","\\ud83d\\ude00","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]\n',
        b'\xef\xbb\xbf[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        # Poison: the row path refuses them too.
        b"nope",
        b"",
        b"[1]",
        b'[1,"",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000.0,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",01764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",+1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",-1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c","1764000000000","b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",true,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US",null,"","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US",5,"","","","","","",""]',
        b'[1,"c",5,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",7258118400000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",99999999999999999999999,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",18446744073709551616,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",18446744073709551616,"US","ua","","","","","","",""]',
        b'[2,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","u\xffa","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","u\xed\xa0\x80a","","","","","","",""]',
        b'[1,"c",1764000000000,"b","c","i",1,"L",1,"US","ua","","","","","","",""][1]',
    ],
)
def test_the_arrow_path_leaves_anything_else_to_the_row_path(payload: bytes) -> None:
    good = click().encode()
    with pytest.raises(ValueError):
        enrich.click_table([payload])
    with pytest.raises(ValueError):
        enrich.click_table([good, payload, good])  # one such entry sends the whole batch to the row path


def test_a_click_id_twice_sends_the_batch_to_the_row_path() -> None:
    payloads = [click().encode(), click(click_id="other").encode(), click().encode()]
    with pytest.raises(ValueError, match="twice"):
        enrich.click_table(payloads)
    assert enrich.click_table(payloads[:2]).num_rows == 2


def test_the_arrow_path_matches_the_batch_path_on_a_realistic_batch() -> None:
    import pyarrow as pa

    from tests.ingest_helpers import make_clicks

    payloads = [ev.encode() for ev in make_clicks(3000, agents=40, links=200, seed=5)]
    table = enrich.click_table(payloads)
    cols = enrich.click_columns(payloads)
    types = {
        "ts": pa.timestamp("ms", tz="UTC"), "link_id": pa.uint64(), "visitor_hash": pa.uint64(), "is_bot": pa.uint8(),
    }
    expected = pa.table({c: pa.array(cols[c], type=types.get(c, pa.string())) for c in CLICK_COLUMNS})
    assert table.equals(expected)
    assert table.column("is_bot").to_pylist().count(1) > 0


# Characters that stress JSON and the Arrow kernels: quotes and backslashes (escaped), control
# characters, the split character, non-ASCII of every UTF-8 length, commas and brackets.
NASTY = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", ",", "[", "]", " ", "é", "€", "😀", "a", "/", ":", "@"]


@pytest.mark.parametrize("seed", range(30))
def test_the_arrow_path_never_disagrees_with_the_row_path(seed: int) -> None:
    import random

    rnd = random.Random(seed)

    def text(n: int) -> str:
        return "".join(rnd.choice(NASTY) if rnd.random() < 0.3 else rnd.choice("abcXYZ09.-") for _ in range(n))

    events = [
        click(
            click_id=f"id{seed}-{i}-" + text(3).replace('"', "").replace("\\", ""),
            user_agent=rnd.choice([IPHONE_IG, CHROME_WIN, "", text(rnd.randrange(12))]),
            referer=rnd.choice(["", "https://" + text(5) + "/" + text(3), text(6)]),
            utm=tuple(text(rnd.randrange(4)) for _ in range(5)),
            hint=rnd.choice(["", "", "head", "prefetch"]),
            country=rnd.choice(["", "DE", "US"]),
        )
        for i in range(rnd.randrange(1, 8))
    ]
    payloads = [ev.encode() for ev in events]
    fast = arrow_path(payloads)
    if fast is not None:
        assert fast == row_path(payloads)
    # Without the characters the encoder escapes, every batch takes the Arrow path.
    plain = {ord(c): "_" for c in '"\\\n\t\x00\x1f'}
    for ev in events:
        ev.click_id = ev.click_id.translate(plain)
        ev.user_agent = ev.user_agent.translate(plain)
        ev.referer = ev.referer.translate(plain)
        u = [x.translate(plain) for x in ev.utm]
        ev.utm = (u[0], u[1], u[2], u[3], u[4])
    payloads = [ev.encode() for ev in events]
    fast = arrow_path(payloads)
    assert fast is not None
    assert fast == row_path(payloads)
