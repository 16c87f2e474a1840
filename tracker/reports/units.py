"""Report money as integer units of 10^-MONEY_SCALE, rounded half-up and written as decimal text.

The report queries send every money sum as an integer count of the money columns' smallest unit
(``Decimal(18, 4)``: 0.0001), which Python adds exactly and cheaply. Rounding is integer
arithmetic on the exact value or quotient, half away from zero (``ROUND_HALF_UP``). The text is
``f"{Decimal.quantize(..., rounding=ROUND_HALF_UP):f}"`` of the same value, down to the sign of a
rounded zero ("-0.00" for -0.004, "-0.000000" for 0 / -5). Decimal divides to 28 significant
digits before it rounds; the two agree while the dividend stays below 10^23 currency units (a
quotient that far from a rounding boundary's tie is at least 1 / (divisor * 10^4) away from it).
"""

from __future__ import annotations

from collections.abc import Sequence

from tracker.core import money

SCALE = money.MONEY_SCALE
# Ratios (roi, conversion_rate) are rounded half-up to this many places.
RATIO_PLACES = 6
_RATIO_ONE = 10**RATIO_PLACES


def text(negative: bool, rounded: int, places: int) -> str:
    """``rounded`` (a non-negative count of 10^-places) as decimal text with ``places`` digits."""
    digits = str(rounded)
    if places:
        if len(digits) <= places:
            digits = "0" * (places + 1 - len(digits)) + digits
        digits = f"{digits[:-places]}.{digits[-places:]}"
    return "-" + digits if negative else digits


class Writer:
    """Figures of one report, money in one currency (its minor unit). A text is made once per
    rounded value: zeros, repeated sums and the few distinct epc values cost a lookup."""

    __slots__ = ("_money", "_ratios", "_rounded", "_step", "places")

    def __init__(self, places: int) -> None:
        if not 0 <= places <= SCALE:
            raise ValueError(f"A currency with {places} decimal places is finer than the money columns.")
        self.places = places
        self._step = 10 ** (SCALE - places)
        self._money: dict[int, str] = {}  # by units
        self._rounded: dict[int, str] = {}  # non-negative, by rounded minor units
        self._ratios: dict[int, str] = {}  # non-negative, by rounded 10^-RATIO_PLACES

    def __call__(self, units: int) -> str:
        """``units`` rounded half-up to the minor unit."""
        out = self._money.get(units)
        if out is None:
            step = self._step
            out = self._money[units] = text(units < 0, (2 * abs(units) + step) // (2 * step), self.places)
        return out

    def per(self, units: int, count: int) -> str:
        """``units / count`` (count > 0: aov, epc) rounded half-up to the minor unit."""
        d = self._step * count
        if units < 0:
            return text(True, (2 * -units + d) // (2 * d), self.places)
        q = (2 * units + d) // (2 * d)
        out = self._rounded.get(q)
        if out is None:
            out = self._rounded[q] = text(False, q, self.places)
        return out

    def ratio(self, numerator: int, denominator: int) -> str:
        """``numerator / denominator`` (denominator != 0, both in one unit) rounded half-up to
        ``RATIO_PLACES``; a zero numerator over a negative denominator is "-0.000000", as Decimal's."""
        d = abs(denominator)
        q = (2 * abs(numerator) * _RATIO_ONE + d) // (2 * d)
        if (numerator < 0) != (denominator < 0):
            return text(True, q, RATIO_PLACES)
        out = self._ratios.get(q)
        if out is None:
            out = self._ratios[q] = text(False, q, RATIO_PLACES)
        return out


# ---------------------------------------------------------------- from ClickHouse
_HIGH = 2**64


def units_sql(decimal_sum: str, name: str) -> tuple[str, str]:
    """A money sum as units, in two Int64 columns ``name`` and ``name_hi`` (``units_of``).

    A sum of Decimal(18, 4) is a Decimal(38, 4), stored as the Int128 count of 0.0001 that
    ``reinterpretAsInt128`` hands over exactly. The client reads Int64 columns in bulk but
    Int128 ones value by value in Python (~7 ms for the 5 sums of 6,000 rows): the low 64 bits
    go as they are (``toInt64`` wraps) and the rest, 0 for any sum below 9.2 * 10^14 currency
    units, beside them."""
    units = f"reinterpretAsInt128({decimal_sum})"
    return f"toInt64({units}) AS {name}", f"toInt64(intDiv({units} - {name}, toInt128('{_HIGH}'))) AS {name}_hi"


def units_of(low: Sequence[int], high: Sequence[int]) -> Sequence[int]:
    """The sums of ``units_sql``'s two columns."""
    if not any(high):
        return low
    return [h * _HIGH + lo for lo, h in zip(low, high, strict=True)]
