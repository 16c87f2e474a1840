"""Batches, pure: no Redis, no ClickHouse. Entries as held, decoding (Arrow, column and row paths,
poison), deduplication inside a batch, replays, skipped entries, the batch token."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS, ClickEvent, encode_conversion
from tracker.ingest import batch
from tracker.ingest.batch import CLICKS, CONVERSIONS, Entries, TableColumns, decode, range_token
from tracker.ingest.delivery import Range


def event(i: int, **kw: Any) -> ClickEvent:
    base: dict[str, Any] = {
        "click_id": f"click-{i:06d}", "ts_ms": 1_764_000_000_000 + i, "brand_id": "brd_1", "campaign_id": "cmp_1",
        "influencer_id": "inf_1", "link_id": 7, "link_code": "abc", "visitor_hash": i, "country": "DE",
        "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Ünïcödé ☃",
        "referer": "https://www.instagram.com/", "utm": ("ig", "", "", "", ""), "hint": "",
    }
    base.update(kw)
    return ClickEvent(**base)


def raw(*payloads: bytes, fields: tuple[bytes, ...] = ()) -> list[Any]:
    """Redis's raw entries ``[[id, [b"e", payload, *fields]], ...]`` with ids 1-0, 1-1, ..."""
    return [[f"1-{i}".encode(), [b"e", p, *fields]] for i, p in enumerate(payloads)]


def test_canonical_entries_take_the_arrow_path_and_others_the_row_path() -> None:
    canonical = [[f"1-{i}".encode(), [b"e", event(i).encode()]] for i in range(5)]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(canonical))
    assert isinstance(cols, TableColumns) and not poison
    assert rows is None  # every entry is a row
    assert cols["click_id"] == [f"click-{i:06d}" for i in range(5)]
    escaped = [*canonical, [b"1-9", [b"e", event(9, user_agent='a "b"').encode()]]]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(escaped))
    assert not isinstance(cols, TableColumns) and not poison
    assert rows is None and len(cols["click_id"]) == 6  # the column path
    bad = [*canonical, [b"1-8", [b"e", b"nope"]], [b"1-7", [b"x", b"1"]], [b"1-6", None]]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(bad))
    assert rows == list(range(5)) and [p[0] for p in poison] == ["1-8", "1-7", "1-6"]
    good = CLICKS.arrow(decode(CLICKS, Entries.from_raw(canonical))[1])
    assert good.equals(CLICKS.arrow(decode(CLICKS, Entries.from_raw(bad))[1]))


@pytest.mark.parametrize(
    ("raw", "values", "plain"),
    [
        ([[b"1-0", [b"e", b"x"]], [b"1-1", [b"e", b"y"]]], [b"x", b"y"], True),
        ([[b"1-0", [b"e", b"x", b"r", b"1"]]], [[b"e", b"x", b"r", b"1"]], False),
        ([[b"1-0", [b"e", b"x"]], [b"1-1", [b"r", b"1", b"e", b"y"]]], [b"x", [b"r", b"1", b"e", b"y"]], False),
        ([[b"1-0", [b"x", b"1"]]], [[b"x", b"1"]], False),
        ([[b"1-0", None], [b"1-1", [b"e", b"y"]]], [[], b"y"], False),
        ([[b"1-0", []]], [[]], False),
    ],
)
def test_entries_keep_a_plain_entry_as_its_payload_and_any_other_as_its_fields(
    raw: list[Any], values: list[Any], plain: bool
) -> None:
    entries = Entries.from_raw(raw)
    assert entries.values == values
    assert entries.plain() is plain
    assert [entries.id(i) for i in range(len(entries))] == [e[0].decode() for e in raw]
    assert [entries.fields(i) for i in range(len(entries))] == [list(e[1] or []) for e in raw]


def test_the_batch_token_names_the_ranges_and_nothing_else() -> None:
    """Equal ranges give equal tokens (a retried insert is dropped); any other range, another token."""
    def rng(start: str, end: str, n: int = 10) -> Range:
        return Range(keys.CLICK_STREAM, start, end, end, n, "w1", "token-a")

    one = range_token(keys.CLICK_STREAM, [rng("1-0", "5-0"), rng("9-0", "12-0")])
    again = Range(keys.CLICK_STREAM, "1-0", "5-0", "5-0", 10, "w2", "token-b", attempts=3)  # owner is no part
    assert range_token(keys.CLICK_STREAM, [again, rng("9-0", "12-0")]) == one
    assert one.startswith(f"{keys.CLICK_STREAM}:5-0:20:")
    others = [
        range_token(keys.CLICK_STREAM, [rng("1-0", "5-0")]),
        range_token(keys.CLICK_STREAM, [rng("1-0", "5-1"), rng("9-0", "12-0")]),
        range_token(keys.CONVERSION_STREAM, [rng("1-0", "5-0"), rng("9-0", "12-0")]),
        range_token(keys.CLICK_STREAM, [], ["1-0", "5-0"]),
    ]
    assert len({one, *others}) == 5


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[2]", "wrong shape"),
        (b'[1,"",1,"b","c","i",1,"L",1,"US","ua","","","","","","",""]', "bad click id"),
        (b'[1,"cid",5,"b","c","i",1,"L",1,"US","ua","","","","","","",""]', "outside the years"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_malformed_click_is_poison_and_its_neighbours_rows(payload: bytes, reason: str) -> None:
    good = [event(i).encode() for i in range(3)]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(raw(good[0], payload, *good[1:])))
    assert rows == [0, 2, 3]
    assert cols["click_id"] == ("click-000000", "click-000001", "click-000002")
    [(entry_id, fields, why)] = poison
    assert (entry_id, fields[b"e"]) == ("1-1", payload)
    assert why.startswith("malformed entry: ") and reason in why


def test_an_entry_without_its_payload_field_is_poison() -> None:
    entries = Entries.from_raw([[b"1-0", [b"x", b"1"]], [b"1-1", None], *raw(event(2).encode())[:1]])
    rows, cols, poison = decode(CLICKS, entries)
    assert [(p[0], p[2]) for p in poison] == [
        ("1-0", "malformed entry: no field e"), ("1-1", "malformed entry: no field e"),
    ]
    assert rows == [2] and list(cols["click_id"]) == ["click-000002"]


def conversion_payload(order: str, version: int) -> bytes:
    row: dict[str, Any] = dict.fromkeys(CONVERSION_COLUMNS, "")
    row.update(
        brand_id="brd_x", order_id=order, version=version, conversion_id=f"cnv_{order}", status="approved",
        currency="EUR", amount=Decimal("10.00"), refunded_amount=Decimal(0), original_currency="EUR",
        original_amount=Decimal("10.00"), original_refunded_amount=Decimal(0), fx_rate=Decimal(1),
        commission=Decimal("1.00"), attributed=1, attribution="coupon", link_id=1,
        occurred_at="2026-11-20T10:00:00+00:00", created_at="2026-11-20T10:00:01+00:00",
        updated_at="2026-11-20T10:00:01+00:00",
    )
    return encode_conversion(row)


def test_conversions_decode_to_typed_rows_and_a_version_twice_keeps_the_first() -> None:
    payloads = [conversion_payload("o-1", 1), conversion_payload("o-2", 1), conversion_payload("o-1", 1),
                conversion_payload("o-1", 2)]
    rows, cols, poison = decode(CONVERSIONS, Entries.from_raw(raw(*payloads)))
    assert rows == [0, 1, 2, 3] and not poison
    assert cols["amount"][0] == Decimal("10.00") and cols["occurred_at"][0] == datetime(2026, 11, 20, 10, tzinfo=UTC)
    keep = batch.first_of_each_key(CONVERSIONS, cols)
    assert keep == [0, 1, 3]
    rows, cols = batch.keep_rows(rows, cols, keep)
    assert rows == [0, 1, 3]
    assert [(o, v) for o, v in zip(cols["order_id"], cols["version"], strict=True)] == [
        ("o-1", 1), ("o-2", 1), ("o-1", 2),
    ]


def test_a_click_twice_in_a_batch_is_kept_once() -> None:
    """A redirect that retried its XADD: the Arrow path refuses the batch, the column path keeps the first."""
    payloads = [event(i).encode() for i in range(4)] + [event(1).encode(), event(3).encode()]
    rows, cols, poison = decode(CLICKS, Entries.from_raw(raw(*payloads)))
    assert not isinstance(cols, TableColumns) and not poison and rows is None
    keep = batch.first_of_each_key(CLICKS, cols)
    assert keep == [0, 1, 2, 3]
    rows, cols = batch.keep_rows(rows, cols, keep)
    assert rows == [0, 1, 2, 3] and batch.n_rows(cols) == 4
    once = decode(CLICKS, Entries.from_raw(raw(*payloads[:4])))[1]
    assert isinstance(once, TableColumns) and batch.first_of_each_key(CLICKS, once) is None


def test_replays_are_found_among_the_rows_kept() -> None:
    plain = raw(event(0).encode(), event(1).encode())
    replays = [[b"2-0", [b"e", event(2).encode(), b"r", b"1"]], [b"2-1", [b"e", event(3).encode(), b"trace", b"x"]]]
    entries = Entries.from_raw(plain + replays)
    assert not entries.plain()
    rows, cols, poison = decode(CLICKS, entries)
    assert rows is None and not poison and batch.n_rows(cols) == 4  # replays still take a fast path
    assert batch.replayed(entries, rows, range(4)) == [2]  # another extra field is no replay
    assert batch.replayed(entries, [0, 2, 3], [0, 1, 2]) == [1]  # positions map to entries through rows


def test_entries_a_resumed_range_dead_lettered_are_left_out() -> None:
    entries = Entries.from_raw(raw(*(event(i).encode() for i in range(4))))
    held = Range(keys.CLICK_STREAM, "0-0", "1-3", "1-0", 4, "w1", "t", skip=frozenset({"1-1", "1-3"}))
    kept = batch.without_skipped(entries, [held])
    assert [kept.id(i) for i in range(len(kept))] == ["1-0", "1-2"]
    assert batch.without_skipped(entries, [Range(keys.CLICK_STREAM, "0-0", "1-3", "1-0", 4, "w1", "t")]) is entries


def test_row_ids_name_the_entries_of_the_rows() -> None:
    entries = Entries.from_raw(raw(*(event(i).encode() for i in range(3))))
    b = batch.Batch(keys.CLICK_STREAM, CLICKS, [], entries, [0, 2], {}, "t")
    assert b.row_ids() == ["1-0", "1-2"]
    assert batch.Batch(keys.CLICK_STREAM, CLICKS, [], entries, None, {}, "t").row_ids() == ["1-0", "1-1", "1-2"]


def test_click_times_in_ms_either_way() -> None:
    assert batch.ms(1_764_000_000_123) == 1_764_000_000_123
    assert batch.ms(datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)) == 1_764_000_000_123
