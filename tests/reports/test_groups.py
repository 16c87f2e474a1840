"""Groups: sums by key from column results, whatever order, repeats or new keys the sources bring."""

from __future__ import annotations

from datetime import date

from tracker.reports.answer import BOT_CLICKS, CLICKS, CONVERSIONS, FEES, REVENUE, UNIQUE_CLICKS, writer
from tracker.reports.groups import Groups

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)


def sums_of(groups: Groups) -> dict[tuple[str, ...], list[int]]:
    return {key: [column[i] for column in groups.sums] for key, i in groups.index.items()}


def test_sources_meet_by_the_text_of_their_keys() -> None:
    g = Groups(("link", "day"), {7: "abc", 8: "xyz"})
    # Cached clicks: link ids and dates; conversions: link codes and dates; one row per group each.
    g.add({"g_link": [7, 8, 7], "g_day": [D1, D1, D2], "c": [10, 20, 30], "b": [1, 2, 3]},
          {CLICKS: "c", BOT_CLICKS: "b"})
    g.add({"g_link": [8, 7], "g_day": [D1, D2], "u": [5, 6]}, {UNIQUE_CLICKS: "u"})
    g.add({"g_link": ["abc", "new"], "g_day": [D2, D1], "n": [4, 9]}, {CONVERSIONS: "n"})
    assert sums_of(g) == {
        ("abc", "2026-11-01"): [10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ("xyz", "2026-11-01"): [20, 2, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        ("abc", "2026-11-02"): [30, 3, 6, 4, 0, 0, 0, 0, 0, 0, 0],
        ("new", "2026-11-01"): [0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0],
    }


def test_a_first_source_with_repeated_keys_adds_them_up() -> None:
    # Link ids the registry no longer knows all read as "" and meet in one group.
    g = Groups(("link",), {})
    g.add({"g_link": [1, 2, 2], "c": [1, 2, 3]}, {CLICKS: "c"})
    g.add({"g_link": ["", "x"], "r": [40000, 10000]}, {REVENUE: "r"})
    assert sums_of(g) == {("",): [6, 0, 0, 0, 0, 40000, 0, 0, 0, 0, 0], ("x",): [0, 0, 0, 0, 0, 10000, 0, 0, 0, 0, 0]}


def test_rows_are_sorted_by_key_with_names_and_every_metric() -> None:
    g = Groups(("day", "influencer"), {})
    g.add({"g_day": [D2, D1], "g_influencer": ["inf_b", "inf_a"], "c": [4, 2]}, {CLICKS: "c"})
    g.add({"g_day": [D1], "g_influencer": ["inf_a"], "f": [12345]}, {FEES: "f"})
    rows = g.rows({"influencer": {"inf_a": "Anna"}}, writer("USD"), fees_allocated=True)
    assert [(r["influencer_id"], r["influencer_name"], r["day"], r["clicks"], r["fees"]) for r in rows] == [
        ("inf_a", "Anna", "2026-11-01", 2, "1.23"), ("inf_b", None, "2026-11-02", 4, "0.00"),
    ]
    assert list(rows[0])[:3] == ["influencer_id", "influencer_name", "day"]  # the answer model's order
    assert g.rows({}, writer("USD"), fees_allocated=False)[0]["fees"] is None
    assert Groups(("day",), {}).rows({}, writer("USD"), fees_allocated=True) == []
