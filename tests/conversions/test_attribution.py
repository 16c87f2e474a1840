from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tracker.conversions.attribution import (
    APPROVED,
    DAY_MS,
    PENDING,
    REFUNDED,
    REJECTED,
    Change,
    CommissionRule,
    OrderState,
    apply,
    attribute,
    commission,
)
from tracker.core.clickid import ClickIds, ClickRef
from tracker.core.errors import Conflict, Unprocessable
from tracker.core.records import LinkRecord

BRAND = "brd_AAAAAAAAAAAAAAAA"
OTHER = "brd_BBBBBBBBBBBBBBBB"
T0 = 1_764_000_000_000  # click time, ms

LINK = LinkRecord(
    id=7,
    code="abc12",
    brand_id=BRAND,
    campaign_id="cmp_1",
    influencer_id="inf_1",
    destination_url="https://shop.example/p",
    coupon_code="ANNA10",
    disabled=False,
    expires_at_ms=None,
    click_id_param="click_id",
    attribution_window_days=30,
)
COUPON_LINK = replace(LINK, id=8, code="cpn88", influencer_id="inf_2", coupon_code="BOB5")
DISABLED = replace(LINK, disabled=True)
OTHER_BRAND_LINK = replace(LINK, brand_id=OTHER)
REF = ClickRef(link_id=7, ts_ms=T0)


@pytest.mark.parametrize(
    ("case", "occurred", "ref", "click_link", "coupon_link", "kind", "link"),
    [
        ("click only", T0 + DAY_MS, REF, LINK, None, "click", LINK),
        ("coupon only", T0, None, None, COUPON_LINK, "coupon", COUPON_LINK),
        ("both: click wins", T0 + DAY_MS, REF, LINK, COUPON_LINK, "click", LINK),
        ("neither", T0, None, None, None, None, None),
        ("click at the window's last ms", T0 + 30 * DAY_MS, REF, LINK, None, "click", LINK),
        ("expired window", T0 + 30 * DAY_MS + 1, REF, LINK, None, None, None),
        ("expired window falls to coupon", T0 + 31 * DAY_MS, REF, LINK, COUPON_LINK, "coupon", COUPON_LINK),
        ("short window", T0 + 2 * DAY_MS, REF, replace(LINK, attribution_window_days=1), None, None, None),
        (
            "zero-day window same instant",
            T0,
            REF,
            replace(LINK, attribution_window_days=0),
            None,
            "click",
            None,
        ),
        ("disabled link", T0 + DAY_MS, REF, DISABLED, None, None, None),
        ("disabled link falls to coupon", T0 + DAY_MS, REF, DISABLED, COUPON_LINK, "coupon", COUPON_LINK),
        ("other brand's click", T0 + DAY_MS, REF, OTHER_BRAND_LINK, None, None, None),
        ("other brand's click, own coupon", T0, REF, OTHER_BRAND_LINK, COUPON_LINK, "coupon", COUPON_LINK),
        ("other brand's coupon", T0, None, None, replace(COUPON_LINK, brand_id=OTHER), None, None),
        ("forged id (parse gave None)", T0, None, LINK, None, None, None),
        ("id names another link", T0, ClickRef(link_id=999, ts_ms=T0), LINK, None, None, None),
        ("link of the id is gone", T0, REF, None, None, None, None),
        ("order before the click beyond skew", T0 - 300_001, REF, LINK, None, None, None),
        ("order just before the click (clock skew)", T0 - 300_000, REF, LINK, None, "click", LINK),
        (
            "coupon of a disabled link still counts",
            T0,
            None,
            None,
            replace(COUPON_LINK, disabled=True),
            "coupon",
            None,
        ),
    ],
)
def test_attribution_table(
    case: str,
    occurred: int,
    ref: ClickRef | None,
    click_link: LinkRecord | None,
    coupon_link: LinkRecord | None,
    kind: str | None,
    link: LinkRecord | None,
) -> None:
    result = attribute(BRAND, occurred, ref, click_link, coupon_link)
    assert result.kind == kind, case
    assert result.attributed is (kind is not None)
    if kind is None:
        assert result.link is None
    elif link is not None:
        assert result.link == link


def test_forged_and_garbled_click_ids_parse_to_nothing() -> None:
    ids = ClickIds("secret-key-0123456789abcdefghijklmnop")
    good = ids.mint(7, T0)
    assert ids.parse(good) == REF
    forged = ClickIds("another-secret-0123456789abcdefghijk").mint(7, T0)
    garbled = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for bad in (forged, garbled, "x" * 20, "", good + "A"):
        ref = ids.parse(bad)
        assert ref is None
        assert attribute(BRAND, T0, ref, LINK, None).kind is None


def D(s: str) -> Decimal:
    return Decimal(s)


@pytest.mark.parametrize(
    ("rule", "status", "net", "currency", "expected"),
    [
        (CommissionRule("percent", D("10")), APPROVED, D("49.90"), "USD", "4.99"),
        (CommissionRule("percent", D("10")), PENDING, D("49.95"), "USD", "5.00"),  # 4.995 half-up
        (CommissionRule("percent", D("10")), APPROVED, D("0.05"), "USD", "0.01"),  # 0.005 half-up
        (CommissionRule("percent", D("10")), APPROVED, D("0.04"), "USD", "0.00"),
        (CommissionRule("percent", D("12.5")), APPROVED, D("99.99"), "USD", "12.50"),  # 12.49875
        (CommissionRule("percent", D("7")), APPROVED, D("1005"), "JPY", "70"),  # 70.35
        (CommissionRule("percent", D("5")), APPROVED, D("10"), "JPY", "1"),  # 0.5 half-up
        (CommissionRule("percent", D("3")), APPROVED, D("1.005"), "KWD", "0.030"),  # 0.03015
        (CommissionRule("percent", D("10")), APPROVED, D("0.005"), "KWD", "0.001"),  # 0.0005 half-up
        (CommissionRule("percent", D("100")), APPROVED, D("20.00"), "EUR", "20.00"),
        (CommissionRule("percent", D("10")), REJECTED, D("49.90"), "USD", "0.00"),
        (CommissionRule("percent", D("10")), REFUNDED, D("49.90"), "USD", "0.00"),
        (CommissionRule("percent", D("10")), APPROVED, D("0"), "USD", "0.00"),
        (CommissionRule("flat", D("5")), APPROVED, D("49.90"), "USD", "5.00"),
        (CommissionRule("flat", D("2.345")), APPROVED, D("49.90"), "USD", "2.35"),
        (CommissionRule("flat", D("2.344")), PENDING, D("1.00"), "USD", "2.34"),
        (CommissionRule("flat", D("5")), APPROVED, D("0.01"), "USD", "5.00"),  # partial refund keeps flat
        (CommissionRule("flat", D("2.5")), APPROVED, D("100"), "JPY", "3"),
        (CommissionRule("flat", D("5")), REJECTED, D("49.90"), "USD", "0.00"),
        (CommissionRule("flat", D("5")), REFUNDED, D("49.90"), "USD", "0.00"),
        (None, APPROVED, D("49.90"), "USD", "0.00"),
        (None, APPROVED, D("100"), "JPY", "0"),
    ],
)
def test_commission_table(
    rule: CommissionRule | None, status: str, net: Decimal, currency: str, expected: str
) -> None:
    got = commission(rule, status, net, currency)
    assert isinstance(got, Decimal)
    assert str(got) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "percent", "value": Decimal("10")}, CommissionRule("percent", D("10"))),
        ({"type": "flat", "value": "2.50"}, CommissionRule("flat", D("2.50"))),
        ({"type": "flat", "value": 3}, CommissionRule("flat", D("3"))),
    ],
)
def test_commission_rule_of(raw: dict[str, object], expected: CommissionRule) -> None:
    assert CommissionRule.of(raw) == expected


def test_commission_rule_of_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match="'cpa'"):
        CommissionRule.of({"type": "cpa", "value": "1"})


def S(status: str, amount: str = "100.00", refunded: str = "0") -> OrderState:
    return OrderState(status, D(amount), D(refunded))


def C(duplicate: bool, status: str, amount: str = "100.00", refunded: str = "0") -> Change:
    return Change(duplicate, status, D(amount), D(refunded))


@pytest.mark.parametrize(
    ("case", "current", "status", "amount", "expected"),
    [
        ("new pending", None, PENDING, "100.00", C(False, PENDING)),
        ("new approved", None, APPROVED, "100.00", C(False, APPROVED)),
        ("new rejected", None, REJECTED, "100.00", C(False, REJECTED)),
        ("same approved again", S(APPROVED), APPROVED, "100.00", C(True, APPROVED)),
        ("same approved, other amount: still a no-op", S(APPROVED), APPROVED, "80.00", C(True, APPROVED)),
        ("same pending again", S(PENDING), PENDING, "100.00", C(True, PENDING)),
        ("same rejected again", S(REJECTED), REJECTED, None, C(True, REJECTED)),
        ("pending -> approved", S(PENDING), APPROVED, "100.00", C(False, APPROVED)),
        ("pending -> approved, final amount", S(PENDING), APPROVED, "90.00", C(False, APPROVED, "90.00")),
        ("pending -> approved, no amount", S(PENDING), APPROVED, None, C(False, APPROVED)),
        ("pending -> rejected", S(PENDING), REJECTED, "100.00", C(False, REJECTED)),
        (
            "pending -> refunded (full, no amount)",
            S(PENDING),
            REFUNDED,
            None,
            C(False, REFUNDED, refunded="100.00"),
        ),
        (
            "pending -> partial refund keeps pending",
            S(PENDING),
            REFUNDED,
            "10.00",
            C(False, PENDING, refunded="10.00"),
        ),
        (
            "approved -> full refund, no amount",
            S(APPROVED),
            REFUNDED,
            None,
            C(False, REFUNDED, refunded="100.00"),
        ),
        (
            "approved -> full refund, whole amount",
            S(APPROVED),
            REFUNDED,
            "100.00",
            C(False, REFUNDED, refunded="100.00"),
        ),
        ("approved -> partial refund", S(APPROVED), REFUNDED, "30.00", C(False, APPROVED, refunded="30.00")),
        (
            "second partial refund, cumulative",
            S(APPROVED, refunded="30.00"),
            REFUNDED,
            "50.00",
            C(False, APPROVED, refunded="50.00"),
        ),
        (
            "partial refund replay",
            S(APPROVED, refunded="30.00"),
            REFUNDED,
            "30.00",
            C(True, APPROVED, refunded="30.00"),
        ),
        (
            "older partial total arriving late",
            S(APPROVED, refunded="50.00"),
            REFUNDED,
            "30.00",
            C(True, APPROVED, refunded="50.00"),
        ),
        (
            "partial then full",
            S(APPROVED, refunded="30.00"),
            REFUNDED,
            None,
            C(False, REFUNDED, refunded="100.00"),
        ),
        (
            "partial then rest",
            S(APPROVED, refunded="30.00"),
            REFUNDED,
            "100.00",
            C(False, REFUNDED, refunded="100.00"),
        ),
        (
            "full refund replay",
            S(REFUNDED, refunded="100.00"),
            REFUNDED,
            None,
            C(True, REFUNDED, refunded="100.00"),
        ),
        (
            "partial after full: no-op",
            S(REFUNDED, refunded="100.00"),
            REFUNDED,
            "30.00",
            C(True, REFUNDED, refunded="100.00"),
        ),
        (
            "partially refunded pending -> approved",
            S(PENDING, refunded="30.00"),
            APPROVED,
            "100.00",
            C(False, APPROVED, refunded="30.00"),
        ),
    ],
)
def test_status_moves(
    case: str, current: OrderState | None, status: str, amount: str | None, expected: Change
) -> None:
    assert apply("A-1", current, status, None if amount is None else D(amount)) == expected, case


@pytest.mark.parametrize(
    ("current", "status", "amount", "error", "message"),
    [
        (None, REFUNDED, None, Conflict, "no conversion yet"),
        (None, REFUNDED, "10.00", Conflict, "no conversion yet"),
        (S(APPROVED), PENDING, "100.00", Conflict, "is approved; it cannot move to pending"),
        (S(APPROVED), REJECTED, "100.00", Conflict, "is approved; it cannot move to rejected"),
        (S(REJECTED), APPROVED, "100.00", Conflict, "is rejected; it cannot move to approved"),
        (S(REJECTED), PENDING, "100.00", Conflict, "is rejected; it cannot move to pending"),
        (S(REJECTED), REFUNDED, None, Conflict, "is rejected; it cannot move to refunded"),
        (
            S(REFUNDED, refunded="100.00"),
            APPROVED,
            "100.00",
            Conflict,
            "is refunded; it cannot move to approved",
        ),
        (
            S(REFUNDED, refunded="100.00"),
            PENDING,
            "100.00",
            Conflict,
            "is refunded; it cannot move to pending",
        ),
        (
            S(REFUNDED, refunded="100.00"),
            REJECTED,
            "100.00",
            Conflict,
            "is refunded; it cannot move to rejected",
        ),
        (S(PENDING), PENDING + "x", "100.00", Unprocessable, "is not one of"),
        (S(APPROVED), REFUNDED, "100.01", Unprocessable, "larger than its amount 100.00"),
        (S(PENDING, refunded="30.00"), APPROVED, "30.00", Unprocessable, "cannot become 30.00"),
        (None, APPROVED, None, Unprocessable, "needs an amount"),
    ],
)
def test_status_moves_refused(
    current: OrderState | None, status: str, amount: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        apply("A-1", current, status, None if amount is None else D(amount))


def test_conflicts_answer_409_and_amount_errors_422() -> None:
    with pytest.raises(Conflict) as conflict:
        apply("A-1", S(APPROVED), PENDING, None)
    assert conflict.value.status == 409
    with pytest.raises(Unprocessable) as bad:
        apply("A-1", S(APPROVED), REFUNDED, D("200"))
    assert bad.value.status == 422
