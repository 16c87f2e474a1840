"""Money rounding: the half-up context's quantize is the keyword form it replaced, value and errors."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

import pytest

from tracker.core import money

# What round_money was: the keyword form, on a context of the same precision.
_BEFORE = Context(prec=60)


def _before(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(money.quantum(currency), rounding=ROUND_HALF_UP, context=_BEFORE)


def _amounts() -> list[Decimal]:
    """Halves and near-halves at every scale, random digits and exponents, the special values."""
    rng = random.Random(7)
    special = [Decimal(s) for s in ("NaN", "sNaN", "Infinity", "-Infinity", "0", "-0", "0.005", "-0.015", "2.5")]
    sign = lambda: "-" if rng.random() < 0.3 else ""  # noqa: E731
    drawn = [Decimal(f"{sign()}{rng.randint(0, 10 ** rng.randint(1, 70))}E{rng.randint(-12, 8)}") for _ in range(3000)]
    return special + [Decimal(f"{n}.{d}5") for n in (0, 1, 99, 10**20) for d in ("", "0", "4", "9", "000")] + drawn


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD", "EUR"])
def test_round_money_is_the_keyword_quantize(currency: str) -> None:
    for amount in _amounts():
        _same(amount, currency)


def _same(amount: Decimal, currency: str) -> None:
    try:
        want: Decimal | str = _before(amount, currency)
    except InvalidOperation as exc:
        want = type(exc).__name__
    try:
        got: Decimal | str = money.round_money(amount, currency)
    except InvalidOperation as exc:
        got = type(exc).__name__
    # Same digits and exponent (Decimal == alone would take 49.9 for 49.90), NaN included.
    assert str(got) == str(want)
    if isinstance(got, Decimal):
        assert got == money.round_to(amount, money.quantum(currency)) or got.is_nan()


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [("0.005", "USD", "0.01"), ("-0.005", "USD", "-0.01"), ("2.5", "JPY", "3"), ("1.0005", "KWD", "1.001"),
     ("49.9", "USD", "49.90"), ("1e45", "USD", "1" + "0" * 45 + ".00")],
)
def test_half_up_to_the_minor_unit(amount: str, currency: str, rounded: str) -> None:
    assert str(money.round_money(Decimal(amount), currency)) == rounded
