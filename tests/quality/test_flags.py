"""The quality rules, pure (``tracker.quality.flags``): edges of every rule, rules switched off."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tracker.quality.flags import Conv, evaluate
from tracker.quality.rules import Rules

T = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
DEFAULTS = Rules()


def conv(oid: str, *, at: datetime = T, kind: str = "click", link: int = 1, click_s: float | None = 60,
         visitor: int = 7, email: str = "", country: str = "", influencer: str = "inf_a") -> Conv:
    click_ts = at - timedelta(seconds=click_s) if kind == "click" and click_s is not None else None
    return Conv(oid, "cnv_" + oid, at, kind, link, influencer, email, country, click_ts,
                visitor if click_ts is not None else 0)


def flags_of(convs: list[Conv], rules: Rules = DEFAULTS, emails: dict[str, str] | None = None,
             countries: dict[tuple[int, date], frozenset[str]] | None = None) -> dict[str, list[str]]:
    return {k: v.flags for k, v in evaluate(convs, rules, emails or {}, countries or {}).items()}


@pytest.mark.parametrize(("seconds", "flagged"), [(0, True), (9.999, True), (10, False), (-5, True), (3600, False)])
def test_fast_click_is_below_min_click_seconds(seconds: float, flagged: bool) -> None:
    assert flags_of([conv("a", click_s=seconds)]) == ({"a": ["fast_click"]} if flagged else {})


def test_a_conversion_whose_click_is_not_copied_yet_is_not_judged_by_its_click() -> None:
    assert flags_of([conv("a", click_s=None)]) == {}


@pytest.mark.parametrize(("n", "flagged"), [(3, False), (4, True), (5, True)])
def test_visitor_repeat_flags_every_conversion_of_the_day_above_the_limit(n: int, flagged: bool) -> None:
    convs = [conv(f"o{i}", at=T + timedelta(minutes=i)) for i in range(n)]
    convs.append(conv("other", visitor=8))  # another visitor
    convs.append(conv("tomorrow", at=T + timedelta(days=1)))  # the same hash, another UTC day
    expected = {f"o{i}": ["visitor_repeat"] for i in range(n)} if flagged else {}
    assert flags_of(convs) == expected


def test_self_referral_compares_keyed_email_hashes() -> None:
    convs = [conv("own", email="h1", visitor=1), conv("other", email="h2", visitor=2), conv("none", visitor=3),
             conv("x", email="h1", influencer="b", visitor=4)]
    assert flags_of(convs, emails={"inf_a": "h1"}) == {"own": ["self_referral"]}
    assert flags_of(convs, Rules(self_referral=False), emails={"inf_a": "h1"}) == {}


def test_coupon_leak_by_country_looks_at_the_link_clicks_of_the_week() -> None:
    seen = {(1, (T - timedelta(days=7)).date()): frozenset({"US"}), (1, T.date()): frozenset({"FR"})}
    convs = [conv("us", kind="coupon", country="US"), conv("fr", kind="coupon", country="FR"),
             conv("br", kind="coupon", country="BR"), conv("unknown", kind="coupon", country=""),
             conv("late", kind="coupon", country="US", at=T + timedelta(days=1)),
             *[conv(f"c{i}", at=T - timedelta(hours=i)) for i in range(3)]]
    assert flags_of(convs, countries=seen) == {"br": ["coupon_leak"], "late": ["coupon_leak"]}
    assert flags_of(convs, Rules(coupon_leak=False), countries=seen) == {}


def test_coupon_leak_by_factor_counts_the_seven_days_up_to_each_order() -> None:
    seen = {(1, (T - timedelta(days=d)).date()): frozenset({"US"}) for d in range(9)}
    coupons = [conv(f"k{i}", kind="coupon", country="US", at=T + timedelta(minutes=i)) for i in range(5)]
    clicks = [conv("c1", at=T - timedelta(days=8)), conv("c2", at=T - timedelta(days=1))]  # only c2 in the week
    # At least one click order counts: 3 coupon orders are fine, the 4th and 5th exceed 3 x 1.
    assert flags_of([*coupons, *clicks], countries=seen) == {"k3": ["coupon_leak"], "k4": ["coupon_leak"]}
    assert flags_of([*coupons, *clicks], Rules(coupon_leak_factor="5"), countries=seen) == {}
    # Other links do not count.
    assert flags_of([*coupons[:3], conv("x", kind="coupon", link=2, country="")], countries=seen) == {}


def test_flags_come_in_a_fixed_order_with_their_evidence() -> None:
    convs = [conv(f"o{i}", click_s=1, email="h", at=T + timedelta(minutes=i)) for i in range(4)]
    result = evaluate(convs, DEFAULTS, {"inf_a": "h"}, {})
    assert result["o0"].flags == ["fast_click", "visitor_repeat", "self_referral"]
    assert result["o0"].evidence == {"click_seconds": 1.0, "visitor_conversions_that_day": 4}
